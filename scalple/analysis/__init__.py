"""SQL analysis: what a statement touched, whose data it was, and its PII masked before disk."""

from scalple.analysis.analyzer import Analyzer, StatementAnalysis
from scalple.analysis.catalog import Catalog, Relation
from scalple.analysis.policy import Policy
from scalple.analysis.results import CopyPlan, ResultField, ResultPlan
from scalple.analysis.subjects import SubjectSet, subject_hash

__all__ = [
    "Analyzer",
    "Catalog",
    "CopyPlan",
    "Policy",
    "Relation",
    "ResultField",
    "ResultPlan",
    "StatementAnalysis",
    "SubjectSet",
    "subject_hash",
]
