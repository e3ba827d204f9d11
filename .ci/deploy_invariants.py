"""Checks of deploy/ that no schema can express: the timers must agree with callvault's
--deadline and --grace, the Jobs' failure policies must match callvault's exit codes, each
ledger must fit its shape (a SQLite file: one writer on one volume; PostgreSQL: the URL from
a Secret, a work-queue Job of parallel workers, receivers in 2+ replicas with a
PodDisruptionBudget), selectors must find the pods they are meant for, every manifest must
be reachable from a kustomization, and the crontab line must parse. deploy/monitoring's alert
rules and dashboard may only use metric names (and labels) callvault exports, as
tests/it/monitoring.rs lists them from the real program; every alert says how bad it is,
for which account, and links a runbook that exists; the PrometheusRule holds the same rules.
Run by .ci/validate-deploy with the venv's Python (PyYAML). Prints one line per problem
and exits 1 if there is any."""

import json
import math
import os
import re
import sys
from collections import namedtuple
from pathlib import Path

import yaml

# Start-up and settling: image pull, ledger open, login, aborting uploads, closing.
MARGIN_S = 60
UNITS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}
# The exit codes after which retrying cannot help, per callvault command: a Job running that
# command must fail at once on exactly these (docs/operations.md, "Exit codes"; `migrate` has no provider).
FAIL_NOW = {"run": {2, 3}, "sync": {2, 3}, "migrate": {2}}
POSTGRES_URL = re.compile(r"postgres(ql)?://", re.IGNORECASE)
WORKLOADS = ("CronJob", "Job", "Deployment")
# Any other object, as the checks name it.
Obj = namedtuple("Obj", "where doc")

problems = []


def problem(where, text):
    line = f"{where}: {text}"
    if line not in problems:
        problems.append(line)


def seconds(text):
    """A duration as callvault (humantime) or systemd writes it: 30s, 20m, 27min, 1h30m."""
    parts = re.findall(r"(\d+)\s*([a-z]*)", str(text).strip())
    if not parts or re.sub(r"[\d\sa-z]", "", str(text)):
        raise ValueError(f"not a duration: {text!r}")
    return sum(int(n) * UNITS[u or "s"] for n, u in parts)


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def selects(selector, labels):
    """Whether a LabelSelector (matchLabels, matchExpressions) matches these labels."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for e in selector.get("matchExpressions") or []:
        op, key, values = e["operator"], e["key"], e.get("values") or []
        if (op == "In" and labels.get(key) not in values
                or op == "NotIn" and key in labels and labels[key] in values
                or op == "Exists" and key not in labels
                or op == "DoesNotExist" and key in labels):
            return False
    return True


def scaled(value, total, round_up):
    """A PodDisruptionBudget's or a rollout's int-or-percent as a number of pods."""
    if isinstance(value, str) and value.endswith("%"):
        exact = int(value[:-1]) * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value)


class Workload:
    """A CronJob, Job or Deployment with what the checks ask of it."""

    def __init__(self, path, doc):
        self.path, self.doc, self.kind = path, doc, doc["kind"]
        self.where = f"{os.path.relpath(path)} {self.kind}/{doc['metadata']['name']}"
        spec = doc["spec"]
        self.job = spec["jobTemplate"]["spec"] if self.kind == "CronJob" else spec if self.kind == "Job" else None
        self.template = (self.job or spec)["template"]
        self.pod = self.template["spec"]
        self.labels = self.template.get("metadata", {}).get("labels", {})
        self.container = self.pod["containers"][0]
        args = self.container.get("args") or []
        self.command = args[0] if args else None


def ledger_of(w, configmaps):
    """Where the container's CALLVAULT_LEDGER comes from, as (kind, how, secret):
    ("sqlite", path, None); ("postgres", "secret", (name, key)); ("postgres", how, None) for
    a URL written out somewhere; (None, None, None) when it cannot be told (reported)."""

    def literal(value, how):
        if POSTGRES_URL.match(str(value)):
            return "postgres", how, None
        return "sqlite", re.sub(r"^sqlite://", "", str(value)), None

    for e in w.container.get("env", []):
        if e["name"] != "CALLVAULT_LEDGER":
            continue
        if "value" in e:
            return literal(e["value"], "a literal env value")
        ref = e.get("valueFrom", {})
        if "secretKeyRef" in ref:
            return "postgres", "secret", (ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
        if "configMapKeyRef" in ref:
            r = ref["configMapKeyRef"]
            data = configmaps.get(r["name"], {})
            if r["key"] in data:
                return literal(data[r["key"]], f"ConfigMap {r['name']}")
        problem(w.where, "CALLVAULT_LEDGER's source is not in this kustomization")
        return None, None, None
    # envFrom: a later source wins over an earlier one.
    for source in reversed(w.container.get("envFrom", [])):
        ref = source.get("configMapRef")
        for key, value in configmaps.get(ref["name"], {}).items() if ref else ():
            if source.get("prefix", "") + key == "CALLVAULT_LEDGER":
                return literal(value, f"ConfigMap {ref['name']}")
    problem(w.where, "CALLVAULT_LEDGER is not set (the image's default is a SQLite file inside the container)")
    return None, None, None


def check_security(w):
    """The hardening every workload shares: non-root, read-only root, nothing to escalate to,
    and resource requests with a memory limit."""
    pod_sc, sc = w.pod.get("securityContext", {}), w.container.get("securityContext", {})
    if pod_sc.get("runAsNonRoot") is not True or pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problem(w.where, "the pod needs securityContext runAsNonRoot: true and seccompProfile RuntimeDefault")
    if (sc.get("allowPrivilegeEscalation") is not False or sc.get("readOnlyRootFilesystem") is not True
            or sc.get("capabilities", {}).get("drop") != ["ALL"]):
        problem(w.where, "the container needs allowPrivilegeEscalation false, readOnlyRootFilesystem true, capabilities drop ALL")
    resources = w.container.get("resources", {})
    if not {"cpu", "memory"} <= set(resources.get("requests", {})) or "memory" not in resources.get("limits", {}):
        problem(w.where, "the container needs cpu and memory requests and a memory limit")


def check_storage(w, kind, ledger):
    """A SQLite ledger is a file on the PersistentVolumeClaim; PostgreSQL pods keep no state."""
    volumes = {v["name"]: v for v in w.pod.get("volumes", []) if "persistentVolumeClaim" in v}
    claims = [m["mountPath"] for m in w.container.get("volumeMounts", []) if m["name"] in volumes]
    directory = os.path.dirname(ledger or "")
    if kind == "sqlite" and not any(directory == p.rstrip("/") or directory.startswith(p.rstrip("/") + "/") for p in claims):
        problem(w.where, f"the SQLite ledger {ledger} is not on a mounted PersistentVolumeClaim")
    if kind == "postgres" and volumes:
        problem(w.where, "a PostgreSQL-ledger pod mounts a PersistentVolumeClaim (it would tie every pod to one node)")


def check_timing(w, runs_passes):
    """terminationGracePeriodSeconds against the preStop pause and CALLVAULT_GRACE; returns
    (deadline, grace) in seconds."""
    env = env_of(w.container)
    grace = seconds(env.get("CALLVAULT_GRACE") or "30s")
    deadline = env.get("CALLVAULT_DEADLINE")
    if runs_passes and deadline is None:
        problem(w.where, "set CALLVAULT_DEADLINE in the container's env, beside the timers it must fit")
    pause = w.container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    tgps = w.pod.get("terminationGracePeriodSeconds", 30)
    if not tgps > pause + grace:
        before = f"the preStop sleep {pause}s + " if pause else ""
        problem(w.where, f"terminationGracePeriodSeconds {tgps} must exceed {before}CALLVAULT_GRACE {grace:g}s")
    return (seconds(deadline) if deadline else None), grace


def check_job(w):
    """What every Job (a bare one or a CronJob's) needs: Never, the exit codes, limits."""
    job = w.job
    if w.pod.get("restartPolicy") != "Never":
        problem(w.where, "restartPolicy must be Never (podFailurePolicy requires it)")
    for field in ("backoffLimit", "activeDeadlineSeconds"):
        if field not in job:
            problem(w.where, f"{field} must be set")
    if w.command not in FAIL_NOW:
        problem(w.where, f"runs {w.command!r}: no exit-code policy known for it (one of {sorted(FAIL_NOW)})")
        return
    names = {c["name"] for c in w.pod["containers"]}
    fail_now, ignores_disruption = set(), False
    for rule in job.get("podFailurePolicy", {}).get("rules", []):
        codes = rule.get("onExitCodes")
        if rule["action"] == "FailJob" and codes and codes["operator"] == "In":
            if codes.get("containerName") not in names:
                problem(w.where, f"podFailurePolicy names container {codes.get('containerName')!r}, not one of {sorted(names)}")
            fail_now |= set(codes["values"])
        if rule["action"] == "Ignore" and {"type": "DisruptionTarget", "status": "True"} in rule.get("onPodConditions", []):
            ignores_disruption = True
    if fail_now != FAIL_NOW[w.command]:
        problem(w.where, f"podFailurePolicy must fail the Job at once on exit codes {sorted(FAIL_NOW[w.command])} exactly, not {sorted(fail_now)}")
    if not ignores_disruption:
        problem(w.where, "podFailurePolicy must Ignore the DisruptionTarget condition (a drain is not the job's failure)")


def slot_seconds(schedule):
    """The period of a '*/N * * * *' schedule in seconds; None for any other form."""
    fields = schedule.split()
    m = re.fullmatch(r"\*/(\d+)", fields[0]) if len(fields) == 5 else None
    return int(m.group(1)) * 60 if m and fields[1:] == ["*"] * 4 else None


def check_cronjob(w, kind):
    spec = w.doc["spec"]
    if spec.get("concurrencyPolicy") != "Forbid":
        problem(w.where, "concurrencyPolicy must be Forbid")
    if "startingDeadlineSeconds" not in spec:
        problem(w.where, "startingDeadlineSeconds must be set")
    if w.command not in ("run", "sync"):
        problem(w.where, f"the CronJob should run `callvault run` or `callvault sync`, not {w.command!r}")
    check_job(w)
    deadline, grace = check_timing(w, runs_passes=w.command == "run")
    job, active = w.job, w.job.get("activeDeadlineSeconds")
    if active is not None and deadline is not None and not deadline + grace + MARGIN_S < active:
        problem(w.where, f"activeDeadlineSeconds {active} must exceed deadline {deadline:g}s + grace {grace:g}s + margin {MARGIN_S}s")
    slot = slot_seconds(spec["schedule"])
    tgps = w.pod.get("terminationGracePeriodSeconds", 30)
    if active is not None and slot and not active + tgps < slot:
        problem(w.where, f"activeDeadlineSeconds {active} + terminationGracePeriodSeconds {tgps} must end inside the schedule's {slot} s slot")
    parallelism = job.get("parallelism", 1)
    if w.command == "sync":
        # A sync is a sequence of pages: one worker; Forbid keeps two syncs apart.
        if parallelism != 1:
            problem(w.where, "a sync CronJob runs one worker (parallelism 1)")
        return
    if kind == "sqlite" and parallelism != 1:
        problem(w.where, "parallelism must be 1 on a SQLite ledger (parallel workers are the PostgreSQL shape)")
    if kind == "postgres":
        # The work queue: parallel workers, done when one succeeds.
        if parallelism < 2:
            problem(w.where, f"the work-queue Job needs parallelism >= 2, not {parallelism}")
        if job.get("completions") is not None or job.get("completionMode", "NonIndexed") != "NonIndexed":
            problem(w.where, "the work-queue Job must not set completions (nor be Indexed): the first worker to succeed ends it")
        if job.get("backoffLimit", 6) < parallelism:
            problem(w.where, f"backoffLimit {job.get('backoffLimit', 6)} must be >= parallelism {parallelism} (every worker may end a pass with exit 1)")
        if job.get("podReplacementPolicy", "Failed") != "Failed":
            problem(w.where, "podReplacementPolicy must be Failed (never more than parallelism workers)")


def check_bare_job(w, group):
    check_job(w)
    if "ttlSecondsAfterFinished" not in w.job:
        problem(w.where, "ttlSecondsAfterFinished must be set (a finished Job blocks re-applying a new image)")
    others = sorted(o.where for o in group if o.kind != "Job")
    if others:
        problem(w.where, f"a Job's pod template is immutable: keep it out of the kustomization of {others}")


def check_deployment(w, kind, group, pdbs, configmap_env):
    spec = w.doc["spec"]
    args = w.container.get("args") or []
    runs_passes = "--schedule" in args or "CALLVAULT_SCHEDULE" in env_of(w.container) or "CALLVAULT_SCHEDULE" in configmap_env
    check_timing(w, runs_passes)
    probes = {k: w.container.get(k, {}).get("httpGet", {}).get("path") for k in ("livenessProbe", "readinessProbe")}
    if probes != {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}:
        problem(w.where, f"probes must be liveness /healthz and readiness /readyz, not {probes}")
    annotations = w.template["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/scrape") != "true" or annotations.get("prometheus.io/path") != "/metrics":
        problem(w.where, "the pod template needs prometheus.io/scrape \"true\" and prometheus.io/path /metrics")
    replicas = spec.get("replicas", 1)
    strategy = spec.get("strategy", {})
    if kind == "sqlite":
        if replicas != 1:
            problem(w.where, "replicas must be 1 (one SQLite writer)")
        if strategy.get("type") != "Recreate":
            problem(w.where, "strategy must be Recreate (the old pod releases the ledger first)")
        return
    if kind != "postgres":
        return
    if replicas < 2:
        problem(w.where, f"replicas must be 2 or more on PostgreSQL, not {replicas}")
    if strategy.get("type") != "RollingUpdate":
        problem(w.where, "strategy must be RollingUpdate, written out")
    elif scaled(strategy.get("rollingUpdate", {}).get("maxUnavailable", "25%"), replicas, round_up=False) >= replicas:
        problem(w.where, "rollingUpdate.maxUnavailable would stop every replica at once")
    for c in w.pod.get("topologySpreadConstraints", []):
        if not selects(c.get("labelSelector", {}), w.labels):
            problem(w.where, f"topologySpreadConstraints on {c['topologyKey']} does not select the pods' own labels")
    mine = [p for p in pdbs if selects(p.doc["spec"].get("selector", {}), w.labels)]
    if len(mine) != 1:
        problem(w.where, f"needs exactly one PodDisruptionBudget selecting its pods {w.labels}, found {[p.where for p in mine]}")
    for pdb in mine:
        pspec = pdb.doc["spec"]
        others = [o.where for o in group if o is not w and selects(pspec.get("selector", {}), o.labels)]
        if others:
            problem(pdb.where, f"also selects the pods of {others}")
        if "maxUnavailable" in pspec:
            evictable = scaled(pspec["maxUnavailable"], replicas, round_up=True)
        else:
            evictable = replicas - scaled(pspec.get("minAvailable", 1), replicas, round_up=True)
        if not 1 <= evictable < replicas:
            problem(pdb.where, f"lets {evictable} of {replicas} replicas be evicted at once: it must be at least 1 (drains) and leave one running")


def check_service(where, doc, group):
    selector = {"matchLabels": doc["spec"].get("selector") or {}}
    chosen = [w for w in group if selects(selector, w.labels)]
    if [w.kind for w in chosen] != ["Deployment"]:
        problem(where, f"must select the pods of one Deployment, not {[w.where for w in chosen]}")
        return
    ports = {p.get("name") for c in chosen[0].pod["containers"] for p in c.get("ports", [])}
    for port in doc["spec"]["ports"]:
        if isinstance(port.get("targetPort"), str) and port["targetPort"] not in ports:
            problem(where, f"targetPort {port['targetPort']} is not a port of {chosen[0].where}")


def literal_urls(where, values):
    for key, value in values:
        if isinstance(value, str) and POSTGRES_URL.search(value):
            problem(where, f"{key} holds a PostgreSQL URL in plain text: put it in a Secret and read it with secretKeyRef")


def example_secrets(root):
    """The Secrets operators create by hand from *.example.yaml: {name: keys}."""
    found = {}
    for path in root.rglob("*.example.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Secret":
                found[doc["metadata"]["name"]] = set(doc.get("stringData", {})) | set(doc.get("data", {}))
    return found


def rendered(kdir):
    """(path, doc) of every object a kustomization takes from files, following directory
    resources such as ../base."""
    out = []
    for entry in yaml.safe_load((kdir / "kustomization.yaml").read_text()).get("resources", []):
        target = (kdir / entry).resolve()
        if target.is_dir() and (target / "kustomization.yaml").is_file():
            out += rendered(target)
        elif target.is_file():
            out += [(target, d) for d in yaml.safe_load_all(target.read_text()) if d]
    return out


def check_kustomization(kfile, secrets):
    kust = yaml.safe_load(kfile.read_text())
    if kust.get("secretGenerator"):
        problem(kfile, "secretGenerator: Secrets are created once by hand, so that apply -k never overwrites them")
    for gen in kust.get("configMapGenerator", []):
        literal_urls(kfile, [(f"configMapGenerator {gen.get('name')}", lit) for lit in gen.get("literals", [])])
    docs = rendered(kfile.parent)
    configmaps = {d["metadata"]["name"]: d.get("data") or {} for _, d in docs if d.get("kind") == "ConfigMap"}
    group, pdbs = [], []
    for path, doc in docs:
        kind, where = doc.get("kind"), f"{os.path.relpath(path)} {doc.get('kind')}/{doc['metadata']['name']}"
        try:
            if kind in WORKLOADS:
                group.append(Workload(path, doc))
            elif kind == "PodDisruptionBudget":
                pdbs.append(Obj(where, doc))
            elif kind == "Secret":
                problem(where, "a Secret in a kustomization: keep it out (an example file, applied once by hand)")
        except (KeyError, IndexError, TypeError) as e:
            problem(where, f"unexpected shape: {e!r}")
    for w in group:
        try:
            kind, how, ref = ledger_of(w, configmaps)
            if kind == "postgres" and how != "secret":
                problem(w.where, f"CALLVAULT_LEDGER must come from a secretKeyRef, not {how}")
            if ref and ref[1] not in secrets.get(ref[0], ()):
                problem(w.where, f"reads CALLVAULT_LEDGER from Secret {ref[0]} key {ref[1]}, which no *.example.yaml Secret provides")
            literal_urls(w.where, [(f"env {n}", v) for n, v in env_of(w.container).items()])
            check_security(w)
            check_storage(w, kind, how if kind == "sqlite" else None)
            if w.kind == "CronJob":
                check_cronjob(w, kind)
            elif w.kind == "Job":
                check_bare_job(w, group)
            else:
                from_maps = {k for s in w.container.get("envFrom", []) if s.get("configMapRef")
                             for k in configmaps.get(s["configMapRef"]["name"], {})}
                check_deployment(w, kind, group, pdbs, from_maps)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            problem(w.where, f"unexpected shape: {e!r}")
    for path, doc in docs:
        where = f"{os.path.relpath(path)} {doc.get('kind')}/{doc['metadata']['name']}"
        if doc.get("kind") == "ConfigMap":
            literal_urls(where, (doc.get("data") or {}).items())
        elif doc.get("kind") == "Service":
            check_service(where, doc, group)
    for pdb in pdbs:
        if not any(selects(pdb.doc["spec"].get("selector", {}), w.labels) for w in group):
            problem(pdb.where, "selects no pods of its kustomization")


def check_kubernetes(root):
    manifests = {p.resolve() for p in root.rglob("*.yaml") if p.name != "kustomization.yaml"}
    listed = set()
    kfiles = sorted(root.rglob("kustomization.yaml"))
    for kfile in kfiles:
        for entry in yaml.safe_load(kfile.read_text()).get("resources", []):
            target = (kfile.parent / entry).resolve()
            if target.is_dir() and (target / "kustomization.yaml").is_file():
                continue
            if not target.is_file():
                problem(kfile, f"resource {entry} does not exist")
            listed.add(target)
    for path in sorted(manifests - listed):
        if not path.name.endswith(".example.yaml"):
            problem(os.path.relpath(path), "not listed in any kustomization.yaml (only *.example.yaml stand alone)")
    secrets = example_secrets(root)
    for kfile in kfiles:
        check_kustomization(kfile, secrets)


def unit_settings(path):
    """systemd unit settings as {key: [values]} (keys repeat, so no configparser)."""
    settings = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def check_systemd(root):
    for path in sorted(root.glob("*.service")):
        s = unit_settings(path)
        env = dict(e.split("=", 1) for v in s.get("Environment", []) for e in v.split())
        grace = seconds(env.get("CALLVAULT_GRACE", "30s"))
        stop = seconds(s.get("TimeoutStopSec", ["90s"])[-1])
        if not stop > grace:
            problem(path, f"TimeoutStopSec {stop:g}s must exceed CALLVAULT_GRACE {grace:g}s")
        if s.get("Type", [""])[-1] == "oneshot" and " sync" in s.get("ExecStart", [""])[-1]:
            if not s.get("TimeoutStartSec"):
                problem(path, "a oneshot sync needs TimeoutStartSec (its hard stop)")
        elif s.get("Type", [""])[-1] == "oneshot":
            if "CALLVAULT_DEADLINE" not in env:
                problem(path, "a oneshot pass needs CALLVAULT_DEADLINE")
                continue
            deadline = seconds(env["CALLVAULT_DEADLINE"])
            start = seconds(s.get("TimeoutStartSec", ["infinity"])[-1]) if s.get("TimeoutStartSec") else None
            if start is None or not deadline + grace + MARGIN_S < start:
                problem(path, f"TimeoutStartSec must exceed deadline {deadline:g}s + grace {grace:g}s + margin {MARGIN_S}s")


CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")


def check_crontab(path):
    lines = [l for l in path.read_text().splitlines() if l.strip() and not l.lstrip().startswith("#")]
    if not lines:
        problem(path, "no crontab line")
    for line in lines:
        fields = line.split(None, 6)
        if len(fields) < 7 or not all(CRON_FIELD.match(f) for f in fields[:5]):
            problem(path, f"not 'min hour dom month dow user command': {line}")
        elif "callvault run" not in fields[6] and "callvault sync" not in fields[6]:
            problem(path, "the command should run `callvault run` or `callvault sync`")


# --- deploy/monitoring: the alert rules and the dashboard -------------------------------

# Written by tests/it/monitoring.rs from what `serve` and a pass's textfile really export.
METRIC_LIST = "monitoring/metric-names.txt"
# Labels a scraped series carries besides callvault's own: the target's, Prometheus's.
SCRAPE_LABELS = {"job", "instance", "__name__"}
# Names in PromQL that are neither metrics nor functions.
PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
                "group_right", "offset", "bool", "inf", "nan", "start", "end"}
SEVERITIES = {"critical", "warning"}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}")
IDENT = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*\()?")


def exported_metrics(path):
    """{sample name: its labels (None where the list has none)} from metric-names.txt."""
    names = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            fields = line.split()
            names[fields[0]] = set(fields[2].split(",")) if len(fields) > 2 else None
    return names


def promql_uses(expr):
    """(metric names, {metric: matcher labels}, grouping labels) of a PromQL expression."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\[[^\]]*\]", "", text)
    grouping = {l.strip() for m in GROUPING.finditer(text) for l in m.group(2).split(",") if l.strip()}
    text = GROUPING.sub(" ", text)
    matchers = {}
    for m in SELECTOR.finditer(text):
        keys = {re.split(r"\s*(=~|!~|!=|=)", pair)[0].strip() for pair in m.group(2).split(",") if pair.strip()}
        matchers.setdefault(m.group(1) or "", set()).update(keys)
    text = SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", text)
    names = {m.group(1) for m in IDENT.finditer(text)
             if not m.group(2) and m.group(1).lower() not in PROMQL_WORDS}
    return names | {n for n in matchers if n}, matchers, grouping


def check_promql(where, expr, exported):
    names, matchers, grouping = promql_uses(expr)
    known = set(SCRAPE_LABELS)
    for name in sorted(names):
        if name not in exported:
            problem(where, f"{name} is not a metric callvault exports (deploy/{METRIC_LIST}): {expr!r}")
        else:
            known |= exported[name] or set()
    for name, keys in matchers.items():
        labels = exported.get(name) if name else set().union(*[exported[n] or set() for n in names if n in exported])
        for key in sorted(keys - SCRAPE_LABELS - (labels or set())):
            if labels is not None:
                problem(where, f"{name or 'a selector'} has no label {key!r}: {expr!r}")
    for label in sorted(grouping - known if names <= exported.keys() else ()):
        problem(where, f"grouping by {label!r}, which no metric of the expression has: {expr!r}")


def runbook_anchors(docs):
    """GitHub's anchors of the headings of docs/operations.md."""
    anchors = set()
    for line in docs.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def check_alert_rules(path, exported, anchors):
    rules = yaml.safe_load(path.read_text())
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record")
            where = f"{os.path.relpath(path)} {name}"
            check_promql(where, str(rule.get("expr", "")), exported)
            if "alert" not in rule:
                continue
            if rule.get("labels", {}).get("severity") not in SEVERITIES:
                problem(where, f"labels.severity must be one of {sorted(SEVERITIES)}")
            notes = rule.get("annotations", {})
            for key in ("summary", "description", "runbook_url"):
                if not notes.get(key):
                    problem(where, f"no {key} annotation")
            if "absent(" not in rule["expr"] and "$labels.account" not in notes.get("description", ""):
                problem(where, "the description must name the account ({{ $labels.account }})")
            page, _, anchor = str(notes.get("runbook_url", "")).partition("#")
            if page != "docs/operations.md" or anchor not in anchors:
                problem(where, f"runbook_url {notes.get('runbook_url')!r} is not a heading of docs/operations.md")
    return rules


def check_dashboard(path, exported):
    try:
        dash = json.loads(path.read_text())
    except ValueError as e:
        problem(path, f"not valid JSON: {e}")
        return
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    if variables.get("DS_PROMETHEUS", {}).get("type") != "datasource":
        problem(path, "no datasource variable DS_PROMETHEUS")
    if variables.get("account", {}).get("type") != "query":
        problem(path, "no query variable `account`")
    for v in variables.values():
        query = v.get("query")
        query = query.get("query", "") if isinstance(query, dict) else str(query or "")
        for metric, label in re.findall(r"label_values\(\s*([\w:]+)\s*,\s*(\w+)\s*\)", query):
            check_promql(f"{path} variable {v['name']}", f"{metric}{{{label}=\"\"}}", exported)
    panels, exprs = list(dash.get("panels", [])), 0
    while panels:
        panel = panels.pop()
        panels += panel.get("panels", [])
        where = f"{path} panel {panel.get('title')!r}"
        if panel.get("type") != "row" and panel.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
            problem(where, "the datasource must be ${DS_PROMETHEUS}")
        for target in panel.get("targets", []):
            exprs += 1
            check_promql(where, target.get("expr", ""), exported)
            if "account" not in target.get("expr", ""):
                problem(where, f"not filtered by $account: {target.get('expr')!r}")
    if not exprs:
        problem(path, "no panel has a query")


def check_monitoring(deploy):
    names = deploy / METRIC_LIST
    if not names.is_file():
        problem(names, "missing: write it with `CALLVAULT_BLESS=1 cargo test --test it monitoring`")
        return
    exported = exported_metrics(names)
    anchors = runbook_anchors(deploy.parent / "docs" / "operations.md")
    rules = check_alert_rules(deploy / "monitoring" / "callvault-alerts.yml", exported, anchors)
    check_dashboard(deploy / "monitoring" / "callvault-dashboard.json", exported)
    wrapped = deploy / "kubernetes" / "monitoring" / "prometheusrule.yaml"
    if yaml.safe_load(wrapped.read_text()).get("spec", {}).get("groups") != rules.get("groups"):
        problem(wrapped, "spec.groups differ from deploy/monitoring/callvault-alerts.yml: regenerate it (the command is in its header)")


def main():
    deploy = Path(sys.argv[1] if len(sys.argv) > 1 else "deploy")
    check_kubernetes(deploy / "kubernetes")
    check_systemd(deploy / "systemd")
    check_crontab(deploy / "crontab.example")
    check_monitoring(deploy)
    for p in problems:
        print(f"ERROR {p}")
    print(f"deploy invariants: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
