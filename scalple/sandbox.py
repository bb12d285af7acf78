"""Throwaway PostgreSQL (with pgAudit) and PgBouncer on 127.0.0.1, for `scalple demo` and the tests.

PostgreSQL and PgBouncer both refuse to run as root; when we are root they run as the `postgres`
OS user, which is created if missing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scalple.errors import SandboxError

ROLES: dict[str, tuple[str, str]] = {
    # role: (password, pg_hba method for 127.0.0.1)
    "app_user": ("app_secret", "scram-sha-256"),
    "md5_user": ("md5_secret", "md5"),
    "pw_user": ("pw_secret", "password"),
    "trust_user": ("", "trust"),
    "monitor_user": ("monitor_secret", "scram-sha-256"),
}
INSTALL_HINT = "install them with: apt-get install -y postgresql-15 postgresql-15-pgaudit pgbouncer"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_bindir() -> Path:
    """The newest PostgreSQL server bin directory on this machine."""
    env = os.environ.get("SCALPLE_PG_BINDIR")
    candidates = [env] if env else sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for c in candidates:
        if c and (Path(c) / "initdb").exists():
            return Path(c)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise SandboxError(f"PostgreSQL server binaries (initdb) were not found; {INSTALL_HINT}")


def pgbouncer_binary() -> Path | None:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    return Path(found) if found else None


def client(
    tool: str, port: int, *args: str, role: str = "app_user", dbname: str = "app"
) -> tuple[list[str], dict[str, str]]:
    """argv and environment to run psql or pgbench against 127.0.0.1:`port` as `role`."""
    argv = [str(postgres_bindir() / tool), "-h", "127.0.0.1", "-p", str(port), "-U", role]
    if tool == "psql":
        argv += ["-X", "-d", dbname, *args]
    else:
        argv += [*args, dbname]
    return argv, {**os.environ, "PGPASSWORD": ROLES.get(role, ("", ""))[0]}


def pgaudit_available(bindir: Path) -> bool:
    libdir = bindir.parent / "lib"
    return (libdir / "pgaudit.so").exists()


def _service_user() -> pwd.struct_passwd | None:
    """The OS user servers run as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/bin/false", "postgres"],
            check=True,
        )
        return pwd.getpwnam("postgres")


def _wait_port(
    port: int, proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SandboxError(f"{what} exited with {proc.returncode}: {_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise SandboxError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s: {_tail(log)}")


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


@dataclass
class Sandbox:
    """A PostgreSQL cluster and optionally a PgBouncer in front of it, all under one temp dir."""

    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="scalple-sandbox-")))
    pgaudit: bool = True
    pg_port: int = 0
    bouncer_port: int = 0
    pool_size: int = 20
    max_client_conn: int = 500
    extra_conf: Sequence[str] = ()
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _pg_ctl: Path | None = None
    _postgres: subprocess.Popen[bytes] | None = None
    _bouncer: subprocess.Popen[bytes] | None = None

    @property
    def pgdata(self) -> Path:
        return self.base / "pgdata"

    @property
    def pg_log(self) -> Path:
        return self.base / "postgres.log"

    @property
    def bouncer_log(self) -> Path:
        return self.base / "pgbouncer.log"

    def dsn(self, role: str = "app_user", *, port: int | None = None, dbname: str = "app") -> str:
        password = ROLES.get(role, ("", ""))[0]
        auth = f"{role}:{password}@" if password else f"{role}@"
        return f"postgresql://{auth}127.0.0.1:{port or self.pg_port}/{dbname}"

    def _run_as(self) -> dict[str, object]:
        user = _service_user()
        if user is None:
            return {}
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def _chown(self, path: Path) -> None:
        user = _service_user()
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)

    def start_postgres(self) -> None:
        bindir = postgres_bindir()
        if self.pgaudit and not pgaudit_available(bindir):
            raise SandboxError(f"pgAudit is not installed for {bindir.parent.name}; {INSTALL_HINT}")
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)
        self._chown(self.base)
        self.pg_port = self.pg_port or free_port()
        as_user = self._run_as()
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        pwfile = self.base / "superuser.pw"
        pwfile.write_text("postgres\n")
        self._chown(pwfile)
        init = subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                f"--pwfile={pwfile}",
            ],
            capture_output=True,
            env=env,
            cwd=self.base,
            **as_user,  # type: ignore[call-overload]
        )
        if init.returncode != 0:
            raise SandboxError(f"initdb failed: {init.stderr.decode(errors='replace')[-2000:]}")
        conf = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.pg_port}",
            f"unix_socket_directories = '{self.base}'",
            "fsync = off",
            "synchronous_commit = off",
            "full_page_writes = off",
            "max_connections = 200",
            "log_line_prefix = '%m [%p] user=%u db=%d app=%a client=%h '",
            "log_connections = off",
            "password_encryption = 'scram-sha-256'",
        ]
        if self.pgaudit:
            conf += [
                "shared_preload_libraries = 'pgaudit'",
                "pgaudit.log = 'all, -misc_set'",
                "pgaudit.log_parameter = on",
            ]
        conf += list(self.extra_conf)
        with open(self.pgdata / "postgresql.conf", "a") as f:
            f.write("\n".join(conf) + "\n")
        hba = ["local all all trust", "host all postgres 127.0.0.1/32 trust"]
        hba += [f"host all {role} 127.0.0.1/32 {method}" for role, (_, method) in ROLES.items()]
        hba += ["host all all 127.0.0.1/32 scram-sha-256"]
        (self.pgdata / "pg_hba.conf").write_text("\n".join(hba) + "\n")
        self._chown(self.pgdata / "pg_hba.conf")
        self._pg_ctl = bindir / "pg_ctl"
        self._launch_postgres()
        self._setup_roles()

    def _launch_postgres(self) -> None:
        bindir = postgres_bindir()
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        with open(self.pg_log, "ab") as logf:
            self._chown(self.pg_log)
            proc = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(self.pgdata)],
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.base,
                start_new_session=True,
                **self._run_as(),  # type: ignore[call-overload]
            )
        self._postgres = self._replace(self._postgres, proc)
        _wait_port(self.pg_port, proc, "PostgreSQL", self.pg_log, 60)
        self._wait_ready()

    def _replace(
        self, old: subprocess.Popen[bytes] | None, new: subprocess.Popen[bytes]
    ) -> subprocess.Popen[bytes]:
        """`new` takes `old`'s place among the processes, so they still stop in reverse order."""
        if old in self._procs:
            self._procs[self._procs.index(old)] = new
        else:
            self._procs.append(new)
        return new

    @staticmethod
    def _end(proc: subprocess.Popen[bytes] | None, sig: int) -> None:
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart_postgres(self) -> None:
        """Stop PostgreSQL with a fast shutdown (its sessions are ended) and start it again on the
        same port and data directory."""
        self._end(self._postgres, signal.SIGINT)
        self._launch_postgres()

    def restart_pgbouncer(self) -> None:
        """Stop PgBouncer at once (SIGTERM: its clients are cut off) and start it again on the same
        port."""
        self._end(self._bouncer, signal.SIGTERM)
        self._launch_pgbouncer()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.psql("SELECT 1", check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise SandboxError(f"PostgreSQL did not accept connections: {_tail(self.pg_log)}")

    def psql(
        self, sql: str, *, dbname: str = "postgres", check: bool = True, user: str = "postgres"
    ) -> subprocess.CompletedProcess[str]:
        """Run SQL as the superuser over TCP with psql; returns psql's output."""
        bindir = postgres_bindir()
        psql = (
            bindir / "psql" if (bindir / "psql").exists() else Path(shutil.which("psql") or "psql")
        )
        out = subprocess.run(
            [
                str(psql),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.pg_port),
                "-U",
                user,
                "-d",
                dbname,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PGPASSWORD": "", "PGCONNECT_TIMEOUT": "5"},
        )
        if check and out.returncode != 0:
            raise SandboxError(f"psql failed on {sql!r}: {out.stderr.strip()}")
        return out

    def _setup_roles(self) -> None:
        stmts = []
        for role, (password, method) in ROLES.items():
            enc = "md5" if method == "md5" else "scram-sha-256"
            pw = f"PASSWORD '{password}'" if password else ""
            stmts.append(f"SET password_encryption = '{enc}'; CREATE ROLE {role} LOGIN {pw};")
        stmts.append("CREATE DATABASE app OWNER app_user;")
        stmts.append("GRANT pg_monitor TO monitor_user;")
        for s in stmts:
            self.psql(s)
        grants = "; ".join(f"GRANT ALL ON SCHEMA public TO {r}" for r in ROLES)
        self.psql(grants, dbname="app")
        if self.pgaudit:
            self.psql("CREATE EXTENSION IF NOT EXISTS pgaudit", dbname="app")

    def start_pgbouncer(self) -> None:
        binary = pgbouncer_binary()
        if binary is None:
            raise SandboxError(f"PgBouncer is not installed; {INSTALL_HINT}")
        self.bouncer_port = self.bouncer_port or free_port()
        userlist = self.base / "userlist.txt"
        userlist.write_text(
            "".join(f'"{r}" "{pw}"\n' for r, (pw, _) in ROLES.items() if pw) + '"postgres" ""\n'
        )
        ini = self.base / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={self.pg_port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.bouncer_port}\n"
            "unix_socket_dir =\n"
            "auth_type = scram-sha-256\n"
            f"auth_file = {userlist}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\n"
            f"max_client_conn = {self.max_client_conn}\n"
            "ignore_startup_parameters = extra_float_digits\n"
            "admin_users = postgres\n"
            f"logfile = {self.bouncer_log}\n"
            f"pidfile = {self.base / 'pgbouncer.pid'}\n"
        )
        for p in (userlist, ini):
            self._chown(p)
            os.chmod(p, 0o600)
        self._launch_pgbouncer()

    def _launch_pgbouncer(self) -> None:
        binary = pgbouncer_binary()
        assert binary is not None
        proc = subprocess.Popen(
            [str(binary), str(self.base / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.base,
            start_new_session=True,
            **self._run_as(),  # type: ignore[call-overload]
        )
        self._bouncer = self._replace(self._bouncer, proc)
        _wait_port(self.bouncer_port, proc, "PgBouncer", self.bouncer_log, 30)

    def postgres_log(self) -> str:
        return self.pg_log.read_text(errors="replace")

    def stop(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._procs.clear()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


@contextlib.contextmanager
def running(*, bouncer: bool = True, **kwargs: object) -> Iterator[Sandbox]:
    sb = Sandbox(**kwargs)  # type: ignore[arg-type]
    try:
        sb.start_postgres()
        if bouncer:
            sb.start_pgbouncer()
        yield sb
    finally:
        sb.cleanup()
