"""The container image and Kubernetes examples in docker/, checked without a
container engine (CI has none): the files are parsed, their cross-references
followed, the configs they carry run through the real `tokenpool check`, the
pool-size arithmetic recomputed, and the image's runtime packages compared
with what the binary actually links (readelf, ldd, dpkg -S).

A user who applies these files gets: probes that reach tokenpool, a workload
identity that is wired, a config that validates with the environment the
manifest provides, a Service that points at the pools' ports, and a server
connection count that fits the limit the manifest states."""

import glob
import json
import os
import re
import shlex
import subprocess

import pytest
import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOCKER = os.path.join(REPO, "docker")
DOCKERFILE = os.path.join(DOCKER, "Dockerfile")
K8S_FILES = sorted(glob.glob(os.path.join(DOCKER, "k8s-*.yaml")))
ALL_YAML = sorted(glob.glob(os.path.join(DOCKER, "*.yaml")))

WI_LABEL = "azure.workload.identity/use"
WI_CLIENT_ID = "azure.workload.identity/client-id"
MAX_CONN = "tokenpool.example/server-max-connections"
RESERVED = "tokenpool.example/server-reserved-connections"
APP_CLIENTS = "tokenpool.example/app-client-connections"

# What the AKS workload identity webhook injects into every container of a
# pod labelled azure.workload.identity/use: "true" (values as AKS sets them;
# AZURE_CLIENT_ID comes from the ServiceAccount annotation).
WEBHOOK_ENV = {
    "AZURE_TENANT_ID": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    "AZURE_FEDERATED_TOKEN_FILE": "/var/run/secrets/azure/tokens/azure-identity-token",
    "AZURE_AUTHORITY_HOST": "https://login.microsoftonline.com/",
}

# Packages debian:12-slim already has, and the sanitizer runtimes of the
# ASan CI build (the image is a Release build without them).
BASE_PACKAGES = {"libc6", "libgcc-s1"}
SANITIZER_PACKAGE = re.compile(r"^lib(asan|ubsan|lsan|tsan)\d*$")


# ---------------------------------------------------------------- helpers

def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def find(docs, kind, name=None):
    found = [d for d in docs if d.get("kind") == kind
             and (name is None or d["metadata"]["name"] == name)]
    return found


def one(docs, kind, name=None):
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def tokenpool_container(deployment):
    """(container, is_native_sidecar) running the tokenpool image."""
    spec = deployment["spec"]["template"]["spec"]
    hits = [(c, True) for c in spec.get("initContainers", []) if is_tokenpool_image(c)]
    hits += [(c, False) for c in spec.get("containers", []) if is_tokenpool_image(c)]
    assert len(hits) == 1, f"{deployment['metadata']['name']}: expected one tokenpool container"
    return hits[0]


def is_tokenpool_image(container):
    repo = container.get("image", "").split("@")[0].rsplit(":", 1)[0]
    return repo.rsplit("/", 1)[-1] == "tokenpool"


def tokenpool_deployments():
    """[(file, docs, deployment)] of every Deployment that runs tokenpool."""
    out = []
    for path in K8S_FILES:
        docs = load_docs(path)
        for dep in find(docs, "Deployment"):
            spec = dep["spec"]["template"]["spec"]
            if any(is_tokenpool_image(c) for c in
                   spec.get("initContainers", []) + spec.get("containers", [])):
                out.append((os.path.basename(path), docs, dep))
    return out


def deployment_named(filename):
    for fname, docs, dep in tokenpool_deployments():
        if fname == filename:
            return docs, dep
    raise AssertionError(f"no tokenpool Deployment in docker/{filename}")


def secret_stand_in(name):
    return f"stand-in-for-{name.lower()}"


def container_env(container, docs):
    """The environment Kubernetes gives the container, resolved from the
    ConfigMaps in the same file; Secrets (created with kubectl, not in the
    file) get stand-in values."""
    env = {}
    for src in container.get("envFrom", []):
        assert "configMapRef" in src, f"envFrom {src}: only ConfigMaps can be resolved"
        cm = one(docs, "ConfigMap", src["configMapRef"]["name"])
        for k, v in cm.get("data", {}).items():
            env[src.get("prefix", "") + k] = str(v)
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = str(e["value"])
            continue
        ref = e["valueFrom"]
        if "configMapKeyRef" in ref:
            cm = one(docs, "ConfigMap", ref["configMapKeyRef"]["name"])
            key = ref["configMapKeyRef"]["key"]
            assert key in cm.get("data", {}), f"{e['name']}: ConfigMap has no key {key}"
            env[e["name"]] = str(cm["data"][key])
        elif "secretKeyRef" in ref:
            env[e["name"]] = secret_stand_in(e["name"])
        else:
            env[e["name"]] = "stand-in"
    return env


def webhook_env(docs, deployment):
    sa = one(docs, "ServiceAccount", deployment["spec"]["template"]["spec"]["serviceAccountName"])
    return dict(WEBHOOK_ENV, AZURE_CLIENT_ID=sa["metadata"]["annotations"][WI_CLIENT_ID])


def run_check(tokenpool_bin, cwd, env, args=()):
    """`tokenpool check` in a clean environment (nothing from the shell that
    could pick an identity or a config) plus env; returns the parsed config."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("AZURE_", "IDENTITY_", "TOKENPOOL_", "MSI_", "PG"))}
    base.update(env)
    p = subprocess.run([tokenpool_bin, "check", *args], env=base, cwd=str(cwd),
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, f"tokenpool check failed ({p.returncode}):\n{p.stdout}{p.stderr}"
    return json.loads(p.stdout)


def hostport(s):
    host, _, port = str(s).rpartition(":")
    return host.strip("[]"), int(port)


def container_port(container, port):
    """A probe's or Service's port (number or name) as a number."""
    if isinstance(port, int):
        return port
    if str(port).isdigit():
        return int(port)
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    raise AssertionError(f"container {container['name']} has no port named {port}")


def _assert_probes(c, port):
    """Liveness on /healthz, readiness and startup on /readyz, all on the
    container's port `port`."""
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                        ("startupProbe", "/readyz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        assert container_port(c, get["port"]) == port, f"{probe} probes another port"


def resolve_rollout_value(value, replicas, round_up):
    if value is None:
        value = "25%"
    if isinstance(value, str) and value.endswith("%"):
        exact = replicas * int(value[:-1]) / 100
        return int(-(-exact // 1)) if round_up else int(exact // 1)
    return int(value)


def peak_pods(deployment):
    """Pods of the Deployment that can hold server connections at once
    during a rolling update, counting old pods still draining: with
    minReadySeconds >= terminationGracePeriodSeconds each old pod is gone
    before the next is stopped, so replicas + 2 x maxSurge + maxUnavailable;
    otherwise draining pods may pile up: 2 x replicas + maxSurge."""
    spec = deployment["spec"]
    replicas = spec.get("replicas", 1)
    ru = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    surge = resolve_rollout_value(ru.get("maxSurge"), replicas, True)
    unavailable = resolve_rollout_value(ru.get("maxUnavailable"), replicas, False)
    grace = spec["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    if spec.get("minReadySeconds", 0) >= grace:
        return replicas + 2 * surge + unavailable
    return 2 * replicas + surge


def server_connections_at_peak(deployment, effective_config):
    """{server host:port: server connections at the worst moment}."""
    per_pod = {}
    for pool in effective_config["pools"]:
        key = f"{pool['server']['host']}:{pool['server']['port']}"
        per_pod[key] = per_pod.get(key, 0) + pool["pool"]["size"]
    pods = peak_pods(deployment)
    return {k: pods * v for k, v in per_pod.items()}


def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def pre_stop_sleep(container):
    cmd = (((container.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command")
    if cmd and os.path.basename(cmd[0]) == "sleep":
        return int(cmd[1])
    sleep = ((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep")
    return int(sleep["seconds"]) if sleep else 0


# ---------------------------------------------------------------- Dockerfile parsing

def parse_dockerfile(text):
    """[(INSTRUCTION, arguments)]: continuation lines joined, comments and
    blank lines dropped (also inside a continued instruction, as Docker
    does)."""
    out, buf = [], None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and buf is None):
            continue
        if line.endswith("\\"):
            buf = (buf or "") + line[:-1] + " "
            continue
        full = ((buf or "") + line).strip()
        buf = None
        if full:
            word, _, rest = full.partition(" ")
            out.append((word.upper(), rest.strip()))
    assert buf is None, "Dockerfile ends inside a continued line"
    return out


def dockerfile_stages():
    """[{"image", "name", "instructions"}] in order."""
    with open(DOCKERFILE) as f:
        instrs = parse_dockerfile(f.read())
    stages = []
    for word, args in instrs:
        if word == "FROM":
            parts = [p for p in args.split() if not p.startswith("--")]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append({"image": parts[0], "name": name, "instructions": []})
        else:
            assert stages, f"{word} before the first FROM"
            stages[-1]["instructions"].append((word, args))
    return stages


def instructions(stage, word):
    return [a for w, a in stage["instructions"] if w == word]


def apt_packages(stage):
    """Packages named on `apt-get install` lines in the stage's RUNs."""
    pkgs = []
    for run in instructions(stage, "RUN"):
        for cmd in re.split(r"&&|;|\|\|", run):
            words = shlex.split(cmd)
            words = [w for w in words if not re.match(r"^[A-Z_]+=", w)]
            if len(words) >= 2 and words[0] in ("apt-get", "apt") and "install" in words:
                after = words[words.index("install") + 1:]
                pkgs += [w for w in after if not w.startswith("-")]
    return pkgs


def exec_form(stage, word):
    args = instructions(stage, word)
    assert args, f"no {word} in the final stage"
    try:
        return json.loads(args[-1])
    except ValueError:
        raise AssertionError(f"{word} {args[-1]}: not the exec (JSON) form; under "
                             f"/bin/sh -c tokenpool would not get SIGTERM and could not drain")


def copy_args(args):
    """(flags, sources, dest) of a COPY."""
    if args.lstrip().startswith("["):
        words = json.loads(args)
    else:
        words = shlex.split(args)
    flags = {}
    while words and words[0].startswith("--"):
        k, _, v = words.pop(0)[2:].partition("=")
        flags[k] = v
    return flags, words[:-1], words[-1]


def final_user_uid():
    user = instructions(dockerfile_stages()[-1], "USER")
    assert user, "the final stage has no USER: the image would run as root"
    return user[-1].split(":")[0]


# ---------------------------------------------------------------- shared libraries

def dpkg_owner(path):
    """The Debian package that ships path, trying the /usr-merged twins
    (dpkg records the path the package was built with)."""
    real = os.path.realpath(path)
    candidates = []
    for p in (path, real):
        candidates.append(p)
        if p.startswith("/usr/lib/"):
            candidates.append(p[len("/usr"):])
        elif p.startswith("/lib/"):
            candidates.append("/usr" + p)
    for p in candidates:
        r = subprocess.run(["dpkg", "-S", p], capture_output=True, text=True)
        if r.returncode == 0:
            for line in r.stdout.splitlines():
                if line.startswith("diversion "):
                    continue
                return line.split(":", 1)[0].split(",")[0].strip()
    return None


def needed_libraries(binary):
    """{soname: resolved path} for the binary's direct DT_NEEDED entries."""
    r = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True, check=True)
    sonames = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", r.stdout)
    assert sonames, f"readelf found no NEEDED entries in {binary}"
    r = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True)
    paths = dict(re.findall(r"^\s*(\S+) => (/\S+)", r.stdout, re.M))
    missing = [s for s in sonames if s not in paths]
    assert not missing, f"ldd cannot resolve {missing}:\n{r.stdout}"
    return {s: paths[s] for s in sonames}


# ---------------------------------------------------------------- .dockerignore

def dockerignore_regex(pattern):
    """A .dockerignore pattern as a regex over slash-separated paths: `*`
    and `?` stay within one path element, `**` spans any number of them."""
    pattern = pattern.strip().strip("/")
    rx, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            rx += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            rx += ".*"
            i += 2
        elif pattern[i] == "*":
            rx += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            rx += "[^/]"
            i += 1
        else:
            rx += re.escape(pattern[i])
            i += 1
    return re.compile(rx + "$")


def dockerignored(rules, path):
    """Whether path (or a directory above it) is excluded from the context."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for negate, rx in rules:
        if any(rx.match(p) for p in prefixes):
            excluded = not negate
    return excluded


def load_dockerignore():
    path = DOCKERFILE + ".dockerignore"
    assert os.path.exists(path), "docker/Dockerfile.dockerignore is missing"
    rules = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            rules.append((negate, dockerignore_regex(line.lstrip("!"))))
    return rules


# ================================================================ tests: manifests

@pytest.mark.parametrize("path", ALL_YAML, ids=os.path.basename)
def test_every_yaml_file_parses(path):
    docs = load_docs(path)
    assert docs, f"{path} is empty"


@pytest.mark.parametrize("path", K8S_FILES, ids=os.path.basename)
def test_every_kubernetes_object_is_complete_and_its_selectors_select_something(path):
    docs = load_docs(path)
    assert any(d.get("kind") == "Deployment" for d in docs)
    for d in docs:
        assert d.get("apiVersion") and d.get("kind") and (d.get("metadata") or {}).get("name"), d
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in find(docs, "Deployment")]
    for d in docs:
        if d["kind"] == "Deployment":
            sel = d["spec"]["selector"]["matchLabels"]
            assert labels_match(sel, d["spec"]["template"]["metadata"]["labels"]), d["metadata"]["name"]
        elif d["kind"] == "Service":
            sel = d["spec"]["selector"]
        elif d["kind"] in ("PodDisruptionBudget",):
            sel = d["spec"]["selector"]["matchLabels"]
        elif d["kind"] == "NetworkPolicy":
            sel = d["spec"]["podSelector"]["matchLabels"]
        else:
            continue
        assert any(labels_match(sel, lab) for lab in pod_labels), \
            f"{d['kind']} {d['metadata']['name']}: selector {sel} matches no pod in the file"


@pytest.mark.parametrize("filename", ["k8s-sidecar.yaml", "k8s-pooler.yaml"])
def test_tokenpool_container_is_locked_down_and_has_resources(filename):
    docs, dep = deployment_named(filename)
    c, _ = tokenpool_container(dep)
    pod_sc = dep["spec"]["template"]["spec"].get("securityContext") or {}
    sc = c.get("securityContext") or {}
    assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True
    assert sc.get("readOnlyRootFilesystem") is True
    assert sc.get("allowPrivilegeEscalation") is False
    assert "ALL" in (sc.get("capabilities") or {}).get("drop", [])
    uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
    if uid is not None:
        assert str(uid) == final_user_uid(), "runAsUser differs from the image's USER"
    req = (c.get("resources") or {}).get("requests") or {}
    assert req.get("cpu") and req.get("memory"), "the tokenpool container needs resource requests"
    assert ((c.get("resources") or {}).get("limits") or {}).get("memory"), "and a memory limit"


@pytest.mark.parametrize("filename", ["k8s-sidecar.yaml", "k8s-pooler.yaml"])
def test_workload_identity_is_wired(filename):
    docs, dep = deployment_named(filename)
    tmpl = dep["spec"]["template"]
    assert tmpl["metadata"]["labels"].get(WI_LABEL) == "true", \
        f"pod template lacks the label {WI_LABEL}: \"true\""
    sa_name = tmpl["spec"].get("serviceAccountName")
    assert sa_name, "no serviceAccountName"
    sa = one(docs, "ServiceAccount", sa_name)
    client_id = (sa["metadata"].get("annotations") or {}).get(WI_CLIENT_ID, "")
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", client_id), \
        f"ServiceAccount {sa_name}: {WI_CLIENT_ID} is not a client id"


def test_both_examples_run_the_same_image():
    assert len(tokenpool_deployments()) == 2
    images = {tokenpool_container(dep)[0]["image"] for _, _, dep in tokenpool_deployments()}
    assert len(images) == 1, f"the examples disagree on the image: {images}"


# ---------------------------------------------------------------- the sidecar

def sidecar(tokenpool_bin, tmp_path, extra_env=None):
    docs, dep = deployment_named("k8s-sidecar.yaml")
    c, native = tokenpool_container(dep)
    env = container_env(c, docs)
    env.update(webhook_env(docs, dep))
    env.update(extra_env or {})
    # Zero config: no -c, no TOKENPOOL_CONFIG, no ./tokenpool.json (cwd is empty).
    assert "-c" not in (c.get("args") or []) and "TOKENPOOL_CONFIG" not in env
    cfg = run_check(tokenpool_bin, tmp_path, env)
    return docs, dep, c, native, env, cfg


def test_sidecar_is_native_and_probes_reach_the_http_listener(tokenpool_bin, tmp_path):
    docs, dep, c, native, env, cfg = sidecar(tokenpool_bin, tmp_path)
    assert native and c.get("restartPolicy") == "Always", \
        "tokenpool must be an initContainer with restartPolicy: Always (native sidecar)"
    host, port = hostport(env["TOKENPOOL_HTTP_LISTEN"])
    assert host not in ("127.0.0.1", "localhost", "::1"), \
        "the kubelet probes the pod IP from the node: HTTP must not listen on loopback only"
    _assert_probes(c, port)


def test_sidecar_environment_makes_a_valid_zero_config_the_app_can_use(tokenpool_bin, tmp_path):
    docs, dep, c, native, env, cfg = sidecar(tokenpool_bin, tmp_path)
    assert len(cfg["pools"]) == 1 and cfg["pools"][0]["protocol"] == "postgres"
    pool = cfg["pools"][0]
    # The pool's identity is the workload identity the ServiceAccount names.
    sa_client = webhook_env(docs, dep)["AZURE_CLIENT_ID"]
    assert (pool["server"]["identity"] or {}).get("client_id", sa_client) == sa_client
    assert pool["server"]["tls"]["mode"] == "verify-full"
    # The app container reaches it with the same credential.
    apps = dep["spec"]["template"]["spec"]["containers"]
    assert len(apps) == 1
    app_env = container_env(apps[0], docs)
    assert f"{app_env['PGHOST']}:{app_env['PGPORT']}" == pool["listen"]
    assert app_env["PGDATABASE"] == pool["name"]
    client_refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"]
                   if e["name"].startswith("TOKENPOOL_CLIENT_")}
    app_refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in apps[0]["env"]
                if e["name"] in ("PGUSER", "PGPASSWORD")}
    assert app_refs["PGUSER"] == client_refs["TOKENPOOL_CLIENT_USER"]
    assert app_refs["PGPASSWORD"] == client_refs["TOKENPOOL_CLIENT_PASSWORD"]
    # The pod waits for tokenpool's drain before killing it.
    grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > cfg["shutdown"]["timeout"] + pre_stop_sleep(c)


def test_sidecar_http_listen_comes_from_the_environment(tokenpool_bin, tmp_path):
    docs, dep, c, native, env, cfg = sidecar(tokenpool_bin, tmp_path)
    assert cfg["http"]["listen"] == env["TOKENPOOL_HTTP_LISTEN"], \
        "TOKENPOOL_HTTP_LISTEN is not honoured: the probes in k8s-sidecar.yaml would fail"


def test_sidecar_connection_arithmetic_fits_the_stated_server_limit(tokenpool_bin, tmp_path):
    docs, dep, c, native, env, cfg = sidecar(tokenpool_bin, tmp_path)
    ann = dep["metadata"]["annotations"]
    budget = int(ann[MAX_CONN]) - int(ann[RESERVED])
    for server, conns in server_connections_at_peak(dep, cfg).items():
        assert conns <= budget, f"{server}: up to {conns} server connections > {budget}"


# ---------------------------------------------------------------- the pooler

def pooler(tokenpool_bin, tmp_path):
    docs, dep = deployment_named("k8s-pooler.yaml")
    c, native = tokenpool_container(dep)
    args = c.get("args") or c.get("command", [])[1:]
    assert "-c" in args, "the pooler runs with -c FILE"
    conf_path = args[args.index("-c") + 1]
    # The file comes from the ConfigMap, mounted as a directory.
    mounts = [m for m in c.get("volumeMounts", [])
              if conf_path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert len(mounts) == 1, f"nothing mounted at {conf_path}"
    assert "subPath" not in mounts[0], "a subPath mount never sees ConfigMap updates (reload)"
    vol = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == mounts[0]["name"]][0]
    cm = one(docs, "ConfigMap", vol["configMap"]["name"])
    key = conf_path[len(mounts[0]["mountPath"].rstrip("/")) + 1:]
    assert key in cm["data"], f"ConfigMap {cm['metadata']['name']} has no key {key}"
    raw = json.loads(cm["data"][key])  # valid JSON
    path = tmp_path / key
    path.write_text(cm["data"][key])
    os.chmod(path, 0o600)
    # Only what the Deployment provides: a variable the config needs and the
    # manifest does not set makes check fail.
    env = container_env(c, docs)
    env.update(webhook_env(docs, dep))
    cfg = run_check(tokenpool_bin, tmp_path, env, ["-c", str(path)])
    return docs, dep, c, raw, cfg


def test_pooler_config_validates_with_the_manifest_environment(tokenpool_bin, tmp_path):
    docs, dep, c, raw, cfg = pooler(tokenpool_bin, tmp_path)
    assert len(cfg["pools"]) >= 1
    for pool in cfg["pools"]:
        assert pool["pool"]["mode"] == "transaction", pool["name"]
        assert pool["server"]["tls"]["mode"] == "verify-full", pool["name"]
    assert cfg["http"]["admin_token_env"], "a network-reachable pooler needs an admin token"
    assert cfg["identity"]["source"] in ("workload_identity", "auto")


def test_pooler_service_and_probes_point_at_the_listeners(tokenpool_bin, tmp_path):
    docs, dep, c, raw, cfg = pooler(tokenpool_bin, tmp_path)
    pool_ports = set()
    for pool in cfg["pools"]:
        host, port = hostport(pool["listen"])
        assert host in ("0.0.0.0", "::", ""), \
            f"pool {pool['name']} listens on {host}: unreachable via the Service"
        pool_ports.add(port)
    svc = one(docs, "Service")
    assert labels_match(svc["spec"]["selector"], dep["spec"]["template"]["metadata"]["labels"])
    target = {container_port(c, p.get("targetPort", p["port"])) for p in svc["spec"]["ports"]}
    assert target == pool_ports, f"Service targets {sorted(target)}, pools listen on {sorted(pool_ports)}"
    host, http_port = hostport(cfg["http"]["listen"])
    assert host not in ("127.0.0.1", "localhost", "::1")
    _assert_probes(c, http_port)


def test_pooler_connection_arithmetic_fits_the_stated_server_limit(tokenpool_bin, tmp_path):
    docs, dep, c, raw, cfg = pooler(tokenpool_bin, tmp_path)
    ann = dep["metadata"]["annotations"]
    budget = int(ann[MAX_CONN]) - int(ann[RESERVED])
    peaks = server_connections_at_peak(dep, cfg)
    for server, conns in peaks.items():
        assert conns <= budget, f"{server}: up to {conns} server connections > {budget}"
    # Shared pooler: more than one replica, and the PDB lets one go at a time.
    replicas = dep["spec"]["replicas"]
    assert replicas >= 2
    pdb = one(docs, "PodDisruptionBudget")
    assert labels_match(pdb["spec"]["selector"]["matchLabels"], dep["spec"]["template"]["metadata"]["labels"])
    assert 1 <= int(pdb["spec"]["minAvailable"]) < replicas, "the PDB must allow one eviction"


def test_pooler_survives_one_replica_down_within_max_clients(tokenpool_bin, tmp_path):
    docs, dep, c, raw, cfg = pooler(tokenpool_bin, tmp_path)
    wanted = dict(kv.split("=") for kv in dep["metadata"]["annotations"][APP_CLIENTS].split(","))
    pools = {p["name"]: p for p in cfg["pools"]}
    assert set(wanted) == set(pools), "app-client-connections must name every pool"
    for name, conns in wanted.items():
        have = (dep["spec"]["replicas"] - 1) * pools[name]["pool"]["max_clients"]
        assert have >= int(conns), f"pool {name}: {conns} app connections, {have} with one replica down"


def test_pooler_grace_period_covers_the_drain(tokenpool_bin, tmp_path):
    docs, dep, c, raw, cfg = pooler(tokenpool_bin, tmp_path)
    grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > pre_stop_sleep(c) + cfg["shutdown"]["timeout"]


# ---------------------------------------------------------------- compose

def compose_defaults(s):
    """Compose's ${VAR:-default} / ${VAR-default} with every default taken."""
    return re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", s)


def test_compose_builds_the_dockerfile_and_mounts_the_config_it_runs():
    path = os.path.join(DOCKER, "compose.yaml")
    docs = load_docs(path)
    assert len(docs) == 1
    svc = docs[0]["services"]["tokenpool"]
    context = os.path.normpath(os.path.join(DOCKER, svc["build"]["context"]))
    dockerfile = os.path.normpath(os.path.join(context, svc["build"]["dockerfile"]))
    assert dockerfile == DOCKERFILE and os.path.exists(dockerfile)
    assert os.path.exists(os.path.join(context, "CMakeLists.txt")), "the context must be the repo root"
    cmd = svc["command"]
    conf = cmd[cmd.index("-c") + 1]
    targets = [compose_defaults(v).split(":")[1] for v in svc["volumes"]]
    assert conf in targets, f"{conf} is not mounted"
    if svc.get("network_mode") == "host":
        assert "ports" not in svc, "host networking has no port mappings"


# ================================================================ tests: the image

def test_dockerfile_is_multi_stage_with_a_slim_non_root_runtime():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "expected a builder and a runtime stage"
    build, final = stages[0], stages[-1]
    assert re.match(r"^debian:(12|bookworm)([@:-]|$)", build["image"]), build["image"]
    assert re.match(r"^debian:(12|bookworm)-slim(@|$)", final["image"]), final["image"]
    uid = final_user_uid()
    assert uid not in ("root", "0"), "the image runs as root"
    assert uid.isdigit(), "a numeric USER lets Kubernetes' runAsNonRoot verify it"
    assert exec_form(final, "ENTRYPOINT") == ["tokenpool"]
    assert exec_form(final, "CMD") == ["run"]
    assert not instructions(final, "ADD")


def test_dockerfile_builds_with_the_documented_commands_and_copies_only_the_binary():
    stages = dockerfile_stages()
    build, final = stages[0], stages[-1]
    runs = " ".join(instructions(build, "RUN"))
    assert "cmake -S . -B build -DCMAKE_BUILD_TYPE=Release" in runs
    assert "cmake --build build" in runs
    workdir = instructions(build, "WORKDIR")[-1]
    copies = [copy_args(a) for a in instructions(final, "COPY")]
    assert len(copies) == 1, "the runtime stage copies the binary and nothing else"
    flags, sources, dest = copies[0]
    assert flags.get("from") in (build["name"], "0"), "the binary must come from the builder"
    assert sources == [os.path.join(workdir, "build", "tokenpool")], sources
    assert dest in ("/usr/local/bin/tokenpool", "/usr/local/bin/")


def test_runtime_packages_are_runtime_only_and_include_the_trust_store():
    final = dockerfile_stages()[-1]
    pkgs = apt_packages(final)
    assert pkgs, "the runtime stage installs no packages"
    dev = [p for p in pkgs if p.endswith("-dev") or p in ("build-essential", "gcc", "cmake", "pkg-config")]
    assert not dev, f"build-time packages in the runtime image: {dev}"
    assert "ca-certificates" in pkgs, "verify-full needs the system trust store"
    assert any("--no-install-recommends" in r for r in instructions(final, "RUN"))
    for needed in ("libuv1", "libssl3", "libcurl4", "libcjson1"):
        assert needed in pkgs


def test_runtime_image_has_every_library_the_binary_links(tokenpool_bin):
    stages = dockerfile_stages()
    builder_pkgs, runtime_pkgs = set(apt_packages(stages[0])), set(apt_packages(stages[-1]))
    problems = []
    for soname, path in needed_libraries(tokenpool_bin).items():
        pkg = dpkg_owner(path)
        if pkg is None:
            problems.append(f"{soname} ({path}) belongs to no Debian package")
            continue
        if pkg in BASE_PACKAGES or SANITIZER_PACKAGE.match(pkg):
            continue
        if pkg not in runtime_pkgs:
            problems.append(f"{soname}: runtime stage lacks {pkg}")
        # The builder needs the -dev package that ships the linker name.
        linker_name = os.path.join(os.path.dirname(path), soname.split(".so")[0] + ".so")
        dev = dpkg_owner(linker_name)
        if dev and dev not in builder_pkgs:
            problems.append(f"{soname}: builder stage lacks {dev}")
    assert not problems, "\n".join(problems)


def test_builder_has_the_dev_package_of_every_pkg_config_module():
    with open(os.path.join(REPO, "CMakeLists.txt")) as f:
        cmake = f.read()
    modules = []
    for m in re.finditer(r"pkg_check_modules\(\s*\w+((?:\s+[^\s)]+)+)\s*\)", cmake):
        modules += [w for w in m.group(1).split()
                    if w not in ("REQUIRED", "QUIET", "IMPORTED_TARGET", "GLOBAL", "NO_CMAKE_PATH",
                                 "NO_CMAKE_ENVIRONMENT_PATH")]
    modules = [re.split(r"[<>=]", m)[0] for m in modules]
    if re.search(r"find_package\(\s*OpenSSL", cmake):
        modules.append("openssl")
    assert modules
    builder_pkgs = set(apt_packages(dockerfile_stages()[0]))
    for mod in modules:
        r = subprocess.run(["pkg-config", "--variable=pcfiledir", mod], capture_output=True, text=True)
        assert r.returncode == 0, f"pkg-config knows no {mod}"
        pkg = dpkg_owner(os.path.join(r.stdout.strip(), mod + ".pc"))
        assert pkg in builder_pkgs, f"{mod}: builder stage lacks {pkg}"


def test_build_context_keeps_sources_and_drops_build_output():
    rules = load_dockerignore()
    for path in ("build/CMakeCache.txt", "build-asan/tokenpool", ".git/HEAD",
                 "tests/integration/node_modules/pg/package.json"):
        assert dockerignored(rules, path), f"{path} would be sent to the builder"
    for path in ("CMakeLists.txt", "proxy/main.c", "conf/conf.c", "auth/tokens.c",
                 "protocols/registry.c", "tests/unit/tp_test.h"):
        assert not dockerignored(rules, path), f"{path} would be missing in the builder"


# ================================================================ tests: the guide

def test_operations_guide_covers_what_operators_need():
    with open(os.path.join(DOCKER, "README.md")) as f:
        text = f.read()
    for word in ("/metrics", "/readyz", "/healthz", "tokenpool doctor", "SIGTERM", "SIGHUP",
                 "pgaadauth_create_principal", "CREATE AADUSER", "FROM EXTERNAL PROVIDER",
                 "TOKENPOOL_HTTP_LISTEN", "tokenpool_token_expiry_seconds"):
        assert word in text, f"docker/README.md does not mention {word}"
    for name in re.findall(r"docker/([\w.-]+\.(?:yaml|md)|Dockerfile)\b", text):
        assert os.path.exists(os.path.join(DOCKER, name)), f"README names docker/{name}, which does not exist"
