#!/usr/bin/env python3
"""An independent checker of callvault export bundles, written from docs/proof-format.md
alone, with Python's standard library and the `openssl` binary: it shares no code with
callvault, to show that the format needs none.

Usage: check_bundle.py BUNDLE --log-key FILE.pub --tsa-roots ROOTS.pem

BUNDLE is a directory, a .zip or a .tar. Prints one line per problem; exits 1 on any,
0 when clean, 2 on a usage error.
"""

import argparse
import base64
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile

PROBLEMS = []
SPKI_ED25519_PREFIX = bytes.fromhex("302a300506032b6570032100")


def problem(text):
    PROBLEMS.append(text)
    print(text)


def sha256_file(path):
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(65536), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def walk(root):
    out = []
    for d, _, files in os.walk(root):
        for name in files:
            out.append(os.path.relpath(os.path.join(d, name), root).replace(os.sep, "/"))
    return sorted(out)


# RFC 9162 hashing and proofs ----------------------------------------------------------

def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(leaf, index, size, proof, root):
    """RFC 9162 2.1.3.2; returns None or why it fails."""
    if index >= size:
        return "leaf %d is not in a tree of %d" % (index, size)
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return "the proof is too long"
        if fn % 2 == 1 or fn == sn:
            r = node_hash(p, r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        return "the proof is too short"
    if r != root:
        return "the proof leads to root %s, the checkpoint's is %s" % (r.hex(), root.hex())
    return None


def verify_consistency(m, n, old_root, new_root, proof):
    """RFC 9162 2.1.4.2; returns None or why it fails."""
    if m > n:
        return "the old tree is larger"
    if m == n:
        return None if not proof and old_root == new_root else "equal sizes, different roots"
    if m == 0:
        return None if not proof else "a proof from the empty tree must be empty"
    if not proof:
        return "empty proof"
    path = list(proof)
    if m & (m - 1) == 0:
        path.insert(0, old_root)
    fn, sn = m - 1, n - 1
    while fn % 2 == 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return "the proof is too long"
        if fn % 2 == 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        return "the proof is too short"
    if fr != old_root:
        return "the proof leads to old root %s, the checkpoint's is %s" % (fr.hex(), old_root.hex())
    if sr != new_root:
        return "the proof leads to new root %s, the checkpoint's is %s" % (sr.hex(), new_root.hex())
    return None


# Keys, checkpoints, tokens -------------------------------------------------------------

def read_key(path, tmp):
    """A signed-note public key NAME+ID+base64(0x01||key) -> (name, id, pem path)."""
    text = open(path).read().strip()
    name, key_id, b64 = text.split("+", 2)
    raw = base64.b64decode(b64)
    if len(raw) != 33 or raw[0] != 1:
        sys.exit("--log-key: not an ed25519 signed-note key")
    ident = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if ident.hex() != key_id:
        sys.exit("--log-key: its key id does not match its name and key")
    der = SPKI_ED25519_PREFIX + raw[1:]
    pem = os.path.join(tmp, "logkey.pem")
    with open(pem, "w") as f:
        f.write("-----BEGIN PUBLIC KEY-----\n%s\n-----END PUBLIC KEY-----\n"
                % base64.b64encode(der).decode())
    return name, ident, pem


def ed25519_ok(pem, message, signature, tmp):
    body, sig = os.path.join(tmp, "body"), os.path.join(tmp, "sig")
    open(body, "wb").write(message)
    open(sig, "wb").write(signature)
    r = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pem, "-rawin",
                        "-in", body, "-sigfile", sig], capture_output=True)
    return r.returncode == 0


def token_ok(data_path, token_path, roots):
    r = subprocess.run(["openssl", "ts", "-verify", "-data", data_path, "-in", token_path,
                        "-CAfile", roots], capture_output=True, text=True)
    return r.returncode == 0, (r.stdout + r.stderr).strip().splitlines()[-1:] or [""]


def parse_checkpoint(text):
    """-> (origin, size, root, manifest seq or None, body, [(name, id, sig)])."""
    body, _, sigs = text.partition("\n\n")
    body += "\n"
    lines = body.splitlines()
    seq = None
    for line in lines[3:]:
        if line.startswith("manifest "):
            seq = int(line.split()[1])
    signatures = []
    for line in sigs.splitlines():
        if line.startswith("\u2014 "):
            name, blob = line[2:].split(" ", 1)
            raw = base64.b64decode(blob)
            signatures.append((name, raw[:4], raw[4:]))
    return lines[0], int(lines[1]), base64.b64decode(lines[2]), seq, body, signatures


def check_checkpoints(root, key, roots, tmp):
    name, ident, pem = key
    cps = {}
    files = walk(os.path.join(root, "checkpoints"))
    for rel in [f for f in files if f.endswith(".checkpoint")]:
        path = "checkpoints/" + rel
        full = os.path.join(root, path)
        account, fname = rel.split("/", 1)
        try:
            origin, size, croot, seq, body, sigs = parse_checkpoint(open(full, encoding="utf-8").read())
        except Exception as e:  # noqa: BLE001 - any parse failure is the problem
            problem("%s is not a checkpoint: %s" % (path, e))
            continue
        cps[path] = (account, int(fname.split(".")[0]), size, croot)
        if origin != "callvault/" + account:
            problem("%s: its origin is %r, not callvault/%s" % (path, origin, account))
        if seq != int(fname.split(".")[0]):
            problem("%s: its manifest line names %s, its file name another" % (path, seq))
        mine = [s for s in sigs if s[0] == name and s[1] == ident]
        if not mine:
            signers = ", ".join("%s+%s" % (s[0], s[1].hex()) for s in sigs) or "nobody"
            problem("%s is signed by %s, not by the key given with --log-key" % (path, signers))
        elif not ed25519_ok(pem, body.encode(), mine[0][2], tmp):
            problem("%s: its signature by %s does not verify" % (path, name))
        tokens = [f for f in files if f.startswith(rel + ".") and f.endswith(".tsr")]
        if not tokens:
            problem("%s has no time-stamp token" % path)
        for t in tokens:
            ok, why = token_ok(full, os.path.join(root, "checkpoints", t), roots)
            if not ok:
                problem("checkpoints/%s: openssl ts -verify fails: %s" % (t, why[0]))
    return cps


# The bundle's files --------------------------------------------------------------------

def check_sums(root, key, roots, tmp):
    sums_path = os.path.join(root, "SHA256SUMS")
    if not os.path.exists(sums_path):
        problem("SHA256SUMS is missing")
        return
    listed = {}
    for n, line in enumerate(open(sums_path, encoding="utf-8").read().splitlines(), 1):
        digest, sep, path = line.partition("  ")
        if not sep or len(digest) != 64:
            problem("SHA256SUMS line %d is malformed" % n)
            continue
        listed[path] = digest.lower()
    for path in walk(root):
        if path not in ("SHA256SUMS", "SHA256SUMS.sig", "SHA256SUMS.tsr") and path not in listed:
            problem("%s is in the bundle but not listed in SHA256SUMS" % path)
    for path, digest in sorted(listed.items()):
        full = os.path.join(root, path)
        if not os.path.isfile(full):
            problem("%s is listed in SHA256SUMS but missing from the bundle" % path)
        elif sha256_file(full)[0] != digest:
            problem("%s does not match SHA256SUMS" % path)
    sig = os.path.join(root, "SHA256SUMS.sig")
    if os.path.exists(sig) and not ed25519_ok(key[2], open(sums_path, "rb").read(),
                                               open(sig, "rb").read(), tmp):
        problem("SHA256SUMS.sig is not a signature of SHA256SUMS by the key given with --log-key")
    tsr = os.path.join(root, "SHA256SUMS.tsr")
    if os.path.exists(tsr):
        ok, why = token_ok(sums_path, tsr, roots)
        if not ok:
            problem("SHA256SUMS.tsr: openssl ts -verify fails: %s" % why[0])


def check_call(root, n, call, cps, recordings):
    name = "%s/%s" % (call["account"], call["uuid"])
    obj = call.get("object")
    for leaf in call["leaves"]:
        said = json.loads(leaf["line"])
        said = said.get("erased", said)
        want = {"uuid": call["uuid"]}
        if said.get("account") is not None:
            want["account"] = call["account"]
        if obj:
            want.update(key=obj["key"], size=obj["size"], sha256=obj["sha256"])
        for field, value in want.items():
            if said.get(field) != value:
                problem("calls.jsonl line %d (%s): its leaf %d says %s %r, the call says %r"
                        % (n, name, leaf["index"], field, said.get(field), value))
        cp = cps.get(leaf["checkpoint"])
        if cp is None:
            problem("calls.jsonl line %d (%s) names %s, which is not in the bundle"
                    % (n, name, leaf["checkpoint"]))
            continue
        why = ("the line gives tree size %d, the checkpoint %d" % (leaf["tree_size"], cp[2])
               if leaf["tree_size"] != cp[2] else
               verify_inclusion(leaf_hash(leaf["line"].encode()), leaf["index"], cp[2],
                                [bytes.fromhex(h) for h in leaf["inclusion"]], cp[3]))
        if why:
            problem("calls.jsonl line %d (%s): its leaf %d is not included in %s: %s"
                    % (n, name, leaf["index"], leaf["checkpoint"], why))
    rec = call.get("recording")
    if rec and obj:
        recordings.add(rec)
        full = os.path.join(root, rec)
        if not os.path.isfile(full):
            problem("%s is listed for %s but missing from the bundle" % (rec, name))
            return
        digest, size = sha256_file(full)
        if digest != obj["sha256"] or size != obj["size"]:
            problem("%s (%s): SHA-256 %s (%d bytes), the call's line says %s (%d bytes)"
                    % (rec, name, digest, size, obj["sha256"], obj["size"]))


def check_calls(root, cps):
    previous, recordings, count = None, set(), 0
    for n, line in enumerate(open(os.path.join(root, "calls.jsonl"), encoding="utf-8"), 1):
        if not line.strip():
            continue
        count += 1
        call = json.loads(line)
        here = (call["account"], min((l["index"] for l in call["leaves"]), default=0))
        if previous is not None and previous > here:
            problem("calls.jsonl line %d (%s/%s) is out of order" % (n, call["account"], call["uuid"]))
        previous = here
        check_call(root, n, call, cps, recordings)
    for rel in walk(os.path.join(root, "recordings")):
        if "recordings/" + rel not in recordings:
            problem("recordings/%s is in the bundle but no call in calls.jsonl lists it" % rel)
    said = json.load(open(os.path.join(root, "bundle.json"))).get("calls")
    if said != count:
        problem("bundle.json says %s calls, calls.jsonl has %d" % (said, count))


def check_consistency(root, cps):
    newest = {}
    for path, (account, seq, _, _) in cps.items():
        if account not in newest or seq > newest[account][0]:
            newest[account] = (seq, path)
    proved = set()
    path = os.path.join(root, "consistency.jsonl")
    lines = open(path, encoding="utf-8").read().splitlines() if os.path.exists(path) else []
    for line in filter(str.strip, lines):
        c = json.loads(line)
        old, new = cps.get(c["from"]), cps.get(c["to"])
        if old is None or new is None:
            problem("consistency.jsonl names %s, which is not in the bundle"
                    % (c["from"] if old is None else c["to"]))
            continue
        why = ("consistency.jsonl gives other sizes" if (c["from_size"], c["to_size"]) != (old[2], new[2])
               else verify_consistency(old[2], new[2], old[3], new[3], [bytes.fromhex(h) for h in c["proof"]]))
        if why:
            problem("%s is not consistent with %s: %s" % (c["from"], c["to"], why))
        proved.add(c["from"])
    for path, (account, _, _, _) in cps.items():
        if path != newest[account][1] and path not in proved:
            problem("%s has no consistency proof to %s" % (path, newest[account][1]))


def unpack(bundle, tmp):
    if os.path.isdir(bundle):
        return bundle
    out = os.path.join(tmp, "bundle")
    if bundle.endswith(".zip"):
        zipfile.ZipFile(bundle).extractall(out)
    elif bundle.endswith(".tar"):
        with tarfile.open(bundle) as t:
            t.extractall(out, filter="data")
    else:
        sys.exit("%s is not a bundle (a directory, .zip or .tar)" % bundle)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--log-key", required=True)
    ap.add_argument("--tsa-roots", required=True)
    args = ap.parse_args()
    if not os.path.exists(args.bundle):
        print("%s does not exist" % args.bundle, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        root = unpack(args.bundle, tmp)
        key = read_key(args.log_key, tmp)
        check_sums(root, key, args.tsa_roots, tmp)
        cps = check_checkpoints(root, key, args.tsa_roots, tmp)
        check_calls(root, cps)
        check_consistency(root, cps)
    print("%d problems" % len(PROBLEMS) if PROBLEMS else "OK: every check holds")
    return 1 if PROBLEMS else 0


if __name__ == "__main__":
    sys.exit(main())
