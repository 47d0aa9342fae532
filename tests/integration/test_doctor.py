"""`tokenpool doctor`: one PASS line per step against the rig; FAIL with a
hint naming the setting to fix when a step cannot pass, and a non-zero
exit. Doctor never binds the listeners and never prints the token."""

import subprocess

import pytest


def doctor(tokenpool_bin, tmp_path, cfg, env=None):
    import json
    import os
    path = tmp_path / "doctor.json"
    path.write_text(json.dumps(cfg))
    os.chmod(path, 0o600)
    run_env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AZURE_", "IDENTITY_", "TOKENPOOL_", "PG"))}
    run_env.update(env or {})
    out = subprocess.run([tokenpool_bin, "doctor", "-c", str(path)], env=run_env,
                         capture_output=True, text=True, timeout=60)
    return out.returncode, out.stdout, out.stderr


def steps(stdout):
    """{step: (PASS|FAIL|SKIP, rest of line)} from doctor's report."""
    found = {}
    for line in stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[0] in ("PASS", "FAIL", "SKIP"):
            found[parts[1]] = (parts[0], parts[2] if len(parts) > 2 else "")
    return found


def test_all_steps_pass_against_the_rig(rig, tokenpool_bin, tmp_path, pg_config):
    cfg = pg_config()
    code, out, err = doctor(tokenpool_bin, tmp_path, cfg)
    assert code == 0, out + err
    s = steps(out)
    assert [k for k in s] == ["token", "connect", "login", "query"], out
    assert all(v[0] == "PASS" for v in s.values()), out
    ident = rig.identity("system")
    assert "imds" in s["token"][1] and ident["client_id"] in s["token"][1]
    assert rig.pg_audience in s["token"][1] and "expires in" in s["token"][1]
    assert "TLSv1." in s["connect"][1] and "CN=localhost" in s["connect"][1]
    assert "verified" in s["connect"][1]
    assert ident["db_user"] in s["login"][1]
    assert "eyJ" not in out + err  # no token, ever
    assert "all checks passed" in out


def test_doctor_does_not_bind_the_listener(rig, tokenpool, tokenpool_bin, tmp_path, pg_config):
    cfg = pg_config()
    tp = tokenpool(cfg)  # a running proxy holds the port
    code, out, err = doctor(tokenpool_bin, tmp_path, cfg)
    assert code == 0, out + err
    assert tp.running


@pytest.mark.parametrize("case", ["wrong_ca", "wrong_audience", "idp_unreachable",
                                  "wrong_password_upstream", "wrong_role"])
def test_failures_name_the_fix(rig, tokenpool_bin, tmp_path, pg_config, free_port, case):
    if case == "wrong_ca":
        cfg = pg_config(server={"tls": {"ca_file": rig.other_ca_file}})
        step, words = "connect", ["certificate verify failed", "server.tls.ca_file"]
    elif case == "wrong_audience":
        cfg = pg_config(server={"scope": "https://database.windows.net/.default"})
        step, words = "login", ["PAM authentication failed", "server.scope"]
    elif case == "idp_unreachable":
        cfg = pg_config(identity={"imds_endpoint": f"http://127.0.0.1:{free_port()}"},
                        pool={"connect_timeout": 3})
        step, words = "token", ["connection refused", "imds_endpoint"]
    elif case == "wrong_password_upstream":
        cfg = pg_config(server={"auth": "password", "user": rig.pg_password_user,
                                "password_env": "UP_PW"})
        step, words = "login", ["password authentication failed", "server.user"]
    else:
        cfg = pg_config(server={"user": "no_such_role"})
        step, words = "login", ["no_such_role", "server.user"]
    env = {"UP_PW": "not-the-password"} if case == "wrong_password_upstream" else None
    code, out, err = doctor(tokenpool_bin, tmp_path, cfg, env)
    assert code == 1, out + err
    s = steps(out)
    assert s.get(step, ("?",))[0] == "FAIL", out
    assert all(v[0] in ("PASS", "SKIP") for k, v in s.items() if k != step), out
    for w in words:
        assert w in out, f"{w!r} not in doctor output:\n{out}"
    assert "hint:" in out
    assert "eyJ" not in out + err
