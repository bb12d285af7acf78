"""`scalple demo`: a throwaway PostgreSQL + pgAudit + PgBouncer with Scalple in front, a small
workload by named people, and the two audit trails side by side."""
