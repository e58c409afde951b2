"""The performance targets of issue 4, evaluated on one run's results.

Each entry: the target, the measured figure (ratios of medians from the same run) and
whether it is met. A target whose workload or baseline did not run is reported as
`met = None` with the reason.

Precision: the targets are evaluated on the `fp32` rows (JAX and PyTorch both at full
FP32 matmuls: equal math). When the run also has `tf32` rows (GPU/TPU), the same ratios
are added as informative entries (`informative: True`, `met: None`, `would_meet`: the
threshold test), since TF32 is not the same arithmetic as the baselines' defaults.
"""

BINDING = "fp32"


def _rows(results, name, precision=BINDING):
    return [r for r in results.get(name, {}).get("rows", [])
            if r.get("precision", BINDING) == precision]


def _median(rows, **match):
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()):
            return row["median_ms"]
    return None


def _entry(target, measured, met, detail=""):
    return {"target": target, "measured": measured, "met": met, "detail": detail}


def _speedup(target, rows, threshold, base_impl, other_impls, **match):
    ours = _median(rows, impl=base_impl, **match)
    parts, ok = [], []
    for other in other_impls:
        theirs = _median(rows, impl=other, **match)
        if ours is None or theirs is None:
            parts.append(f"{other}: not run")
            continue
        ratio = theirs / ours
        parts.append(f"{ratio:.2f}x vs {other}")
        ok.append(ratio >= threshold)
    met = all(ok) if ok and len(ok) == len(other_impls) else None
    return _entry(target, "; ".join(parts), met, f"{base_impl}, {match}")


def evaluate(results: dict) -> list[dict]:
    """The binding fp32 entries, then the informative tf32 ones (if tf32 rows exist)."""
    out = [{**e, "precision": BINDING, "informative": False}
           for e in _evaluate(results, BINDING)]
    if any(r.get("precision") == "tf32"
           for res in results.values() for r in res.get("rows", [])):
        for e in _evaluate(results, "tf32"):
            if e["met"] is None:  # not measured at tf32 (workload or baseline absent)
                continue
            out.append({**e, "target": f"[tf32, informative] {e['target']}",
                        "met": None, "would_meet": e["met"], "precision": "tf32",
                        "informative": True})
    return out


def _evaluate(results: dict, precision: str) -> list[dict]:
    out = []
    euler = _rows(results, "euler", precision)
    fast, vmap = "contdepth fast path", "contdepth vmap"
    torches = ["torch eager loop", "torchdiffeq euler"]
    out.append(_speedup("overhead-bound Euler fwd+grad >= 5x faster than torchdiffeq and "
                        "a PyTorch eager loop", euler, 5.0, fast, torches,
                        case="overhead-bound", what="forward+gradient"))
    out.append(_speedup("compute-bound Euler fwd+grad: at least parity with PyTorch eager",
                        euler, 1.0, fast, ["torch eager loop"],
                        case="compute-bound", what="forward+gradient"))
    out.append(_speedup("compute-bound Euler fwd+grad, generic jax.vmap path: parity with "
                        "PyTorch eager (informative)", euler, 1.0, vmap, ["torch eager loop"],
                        case="compute-bound", what="forward+gradient"))
    for case in ("overhead-bound", "compute-bound"):
        out.append(_speedup(f"{case} Euler fwd+grad >= 2x faster than diffrax Euler "
                            "(default adjoint)", euler, 2.0, fast, ["diffrax Euler"],
                            case=case, what="forward+gradient"))
    for what, key, threshold in (("forward", "fwd", 0.60), ("forward+gradient", "fwd+grad", 0.50)):
        row = next((r for r in euler if r.get("case") == "compute-bound"
                    and r.get("what") == what and r.get("impl") == fast), None)
        frac = None if row is None else row.get("frac_peak (same rounds)", row.get("frac_peak"))
        suite = None if row is None else row.get("frac_peak")
        suite = "n/a" if suite is None else f"{suite:.0%}"
        out.append(_entry(f"compute-bound Euler {key} >= {threshold:.0%} of measured matmul peak",
                          None if frac is None else
                          f"{frac:.0%} (of the peak timed in the same rounds; {suite} of the "
                          "suite's peak)",
                          None if frac is None else frac >= threshold, fast))
    adaptive = _rows(results, "adaptive", precision)
    for case in ("overhead-bound", "compute-bound"):
        for what in ("forward", "forward+gradient"):
            ours = next((r for r in adaptive if r.get("case") == case and r.get("solver") == "dopri5"
                         and r.get("what") == what
                         and r.get("impl") == "contdepth (batch as one system)"), None)
            theirs = next((r for r in adaptive if r.get("case") == case and r.get("solver") == "dopri5"
                           and r.get("what") == what and r.get("impl") == "torchdiffeq dopri5"), None)
            if ours is None or theirs is None:
                out.append(_entry(f"adaptive dopri5 {case} {what}: faster than torchdiffeq per step",
                                  None, None, "not run"))
                continue
            per_step = theirs["ms/step"] / ours["ms/step"]
            out.append(_entry(
                f"adaptive dopri5 {case} {what}: faster than torchdiffeq at equal steps",
                f"{per_step:.2f}x per step ({theirs['median_ms'] / ours['median_ms']:.2f}x total; "
                f"steps {ours['steps']} vs {theirs['steps']})",
                per_step > 1.0, "contdepth (batch as one system)"))
    jac = _rows(results, "jacobian", precision)
    ours = [r["median_ms"] for r in jac if r["impl"].startswith("contdepth")]
    theirs = [r["median_ms"] for r in jac if r["impl"].startswith("torch")]
    if ours and theirs:
        ratio = min(theirs) / min(ours)
        out.append(_entry("Jacobian >= 2x faster than torch.func (best vs best)",
                          f"{ratio:.2f}x", ratio >= 2.0))
    else:
        out.append(_entry("Jacobian >= 2x faster than torch.func", None, None, "not run"))
    comp = [r for r in _rows(results, "compile", precision) if r["impl"].startswith("EulerResNet")]
    if len(comp) >= 2:
        first, last = comp[0], comp[-1]
        ratio = last["compile_s (median)"] / first["compile_s (median)"]
        out.append(_entry(f"compile time flat in N: N={last['N']} within 1.3x of N={first['N']}",
                          f"{ratio:.2f}x", ratio <= 1.3))
    for program in ("forward", "forward+gradient"):
        ode = [r for r in _rows(results, "compile", precision)
               if r["impl"] == "cd.NeuralODE" and r.get("program") == program]
        if ode:
            ratio = ode[0]["vs diffrax"]
            out.append(_entry(f"cd.NeuralODE {program} compile within 1.2x of diffrax",
                              f"{ratio:.2f}x", ratio <= 1.2))
    return out
