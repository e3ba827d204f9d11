"""Checks of deploy/ that no schema can express: the timers must agree with callvault's
--deadline and --grace, the CronJob's failure policy must match callvault's exit codes,
every manifest must be reachable from a kustomization, and the crontab line must parse.
Run by .ci/validate-deploy with the venv's Python (PyYAML). Prints one line per problem
and exits 1 if there is any."""

import os
import re
import sys
from pathlib import Path

import yaml

# Start-up and settling: image pull, ledger open, login, aborting uploads, closing.
MARGIN_S = 60
UNITS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}

problems = []


def problem(where, text):
    problems.append(f"{where}: {text}")


def seconds(text):
    """A duration as callvault (humantime) or systemd writes it: 30s, 20m, 27min, 1h30m."""
    parts = re.findall(r"(\d+)\s*([a-z]*)", str(text).strip())
    if not parts or re.sub(r"[\d\sa-z]", "", str(text)):
        raise ValueError(f"not a duration: {text!r}")
    return sum(int(n) * UNITS[u or "s"] for n, u in parts)


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def pod_timing(where, pod, container):
    """Checks terminationGracePeriodSeconds against CALLVAULT_GRACE; returns (deadline, grace)."""
    env = env_of(container)
    grace = seconds(env.get("CALLVAULT_GRACE", "30s"))
    deadline = env.get("CALLVAULT_DEADLINE")
    if deadline is None:
        problem(where, "set CALLVAULT_DEADLINE in the container's env, beside the timers it must fit")
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    if not tgps > grace:
        problem(where, f"terminationGracePeriodSeconds {tgps} must exceed CALLVAULT_GRACE {grace:g}s")
    return (seconds(deadline) if deadline else None), grace


def check_cronjob(where, doc):
    spec = doc["spec"]
    job = spec["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    if spec.get("concurrencyPolicy") != "Forbid":
        problem(where, "concurrencyPolicy must be Forbid")
    if "startingDeadlineSeconds" not in spec:
        problem(where, "startingDeadlineSeconds must be set")
    if pod.get("restartPolicy") != "Never":
        problem(where, "restartPolicy must be Never (podFailurePolicy requires it)")
    if "backoffLimit" not in job:
        problem(where, "backoffLimit must be set")
    names = {c["name"] for c in pod["containers"]}
    fail_now = set()
    for rule in job.get("podFailurePolicy", {}).get("rules", []):
        codes = rule.get("onExitCodes")
        if rule["action"] == "FailJob" and codes and codes["operator"] == "In":
            if codes.get("containerName") not in names:
                problem(where, f"podFailurePolicy names container {codes.get('containerName')!r}, not one of {sorted(names)}")
            fail_now |= set(codes["values"])
    if fail_now != {2, 3}:
        problem(where, f"podFailurePolicy must fail the Job at once on exit codes 2 and 3 exactly, not {sorted(fail_now)}")
    deadline, grace = pod_timing(where, pod, pod["containers"][0])
    active = job.get("activeDeadlineSeconds")
    if active is None:
        problem(where, "activeDeadlineSeconds must be set")
    elif deadline is not None and not deadline + grace + MARGIN_S < active:
        problem(where, f"activeDeadlineSeconds {active} must exceed deadline {deadline:g}s + grace {grace:g}s + margin {MARGIN_S}s")


def check_deployment(where, doc):
    spec = doc["spec"]
    if spec.get("replicas") != 1:
        problem(where, "replicas must be 1 (one SQLite writer)")
    if spec.get("strategy", {}).get("type") != "Recreate":
        problem(where, "strategy must be Recreate (the old pod releases the ledger first)")
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    pod_timing(where, pod, container)
    probes = {k: container.get(k, {}).get("httpGet", {}).get("path") for k in ("livenessProbe", "readinessProbe")}
    if probes != {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}:
        problem(where, f"probes must be liveness /healthz and readiness /readyz, not {probes}")
    annotations = spec["template"]["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/scrape") != "true" or annotations.get("prometheus.io/path") != "/metrics":
        problem(where, "the pod template needs prometheus.io/scrape \"true\" and prometheus.io/path /metrics")


def check_kubernetes(root):
    manifests = {p.resolve() for p in root.rglob("*.yaml") if p.name != "kustomization.yaml"}
    listed = set()
    for kfile in sorted(root.rglob("kustomization.yaml")):
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
    for path in sorted(manifests):
        for doc in yaml.safe_load_all(path.read_text()):
            kind = (doc or {}).get("kind")
            where = f"{os.path.relpath(path)} {kind}/{doc['metadata']['name']}" if kind else path
            try:
                if kind == "CronJob":
                    check_cronjob(where, doc)
                elif kind == "Deployment":
                    check_deployment(where, doc)
            except (KeyError, IndexError, TypeError, ValueError) as e:
                problem(where, f"unexpected shape: {e!r}")


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
        if s.get("Type", [""])[-1] == "oneshot":
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
        elif "callvault run" not in fields[6]:
            problem(path, "the command should run `callvault run`")


def main():
    deploy = Path(sys.argv[1] if len(sys.argv) > 1 else "deploy")
    check_kubernetes(deploy / "kubernetes")
    check_systemd(deploy / "systemd")
    check_crontab(deploy / "crontab.example")
    for p in problems:
        print(f"ERROR {p}")
    print(f"deploy invariants: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
