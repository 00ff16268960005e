#!/usr/bin/env python3
"""Generate synthesis_methods.json: expected figures for every synthesis method
and option, computed here independently of the Rust code, from the rules as
documented on qis_core::synthesize_with, SynthesisConfig::with_outliers and
Posterior (plain floats; the Beta quantile by bisection on the regularised
incomplete beta function, evaluated by its continued fraction).

    python3 qis-core/tests/vectors/synthesis_methods.py > qis-core/tests/vectors/synthesis_methods.json
"""
import hashlib
import json
import math

T = 1_764_000_000.0


def pkt(agent, problem, conf, cv, ts=T, conclusion=None):
    return {
        "agent_id": agent,
        "domain": "hvac",
        "problem_class": problem,
        "conclusion": conclusion or f"{agent} sees {problem}",
        "confidence": conf,
        "context_vector": cv,
        "timestamp": ts,
        "source_node": f"node-{agent}",
    }


# ── The rules ────────────────────────────────────────────────────────────────

def ballot(own, twins):
    votes = [own]
    slot = {own["agent_id"]: 0}
    seen = [own]  # every distinct packet taken (votes and displaced)
    dups = superseded = 0
    for p in twins:
        if p in seen:
            dups += 1
            continue
        seen.append(p)
        s = slot.get(p["agent_id"])
        if s is None:
            slot[p["agent_id"]] = len(votes)
            votes.append(p)
            continue
        superseded += 1
        if s != 0 and p["timestamp"] >= votes[s]["timestamp"]:
            votes[s] = p
    return votes, dups, superseded


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def outliers(votes, k, res):
    out = set()
    problems = {}
    for i, v in enumerate(votes):
        problems.setdefault((v["domain"], v["problem_class"]), []).append(i)
    for members in problems.values():
        if len(members) < 3:
            continue
        lens = {}
        for i in members:
            lens[len(votes[i]["context_vector"])] = lens.get(len(votes[i]["context_vector"]), 0) + 1
        m, gm = max(lens.items(), key=lambda kv: (kv[1], kv[0]))
        if gm < 3 or 2 * gm <= len(members):
            continue
        ref = [i for i in members if len(votes[i]["context_vector"]) == m]
        out |= {i for i in members if i not in ref}
        centre = [median([votes[i]["context_vector"][j] for i in ref]) for j in range(m)]
        d = {i: math.dist(votes[i]["context_vector"], centre) for i in ref}
        md = median(list(d.values()))
        mad = median([abs(x - md) for x in d.values()])
        cut = md + k * max(1.4826 * mad, 1 / res)
        out |= {i for i in ref if d[i] > cut}
    return out


def fingerprint(domain, problem, cv, res):
    buckets = ",".join(str(math.floor(x * res)) for x in cv)
    canonical = f"qis-fp-v1\n{domain}\n{problem}\n{buckets}"
    return hashlib.sha256(canonical.encode()).hexdigest()


def betacf(a, b, x):
    # Lentz's continued fraction for the incomplete beta function.
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return h


def beta_cdf(a, b, x):
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1 - x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(lbt) * betacf(a, b, x) / a
    return 1 - math.exp(lbt) * betacf(b, a, 1 - x) / b


def beta_quantile(a, b, q):
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if beta_cdf(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def synthesize(config, own, twins):
    method = config["method"]
    res = config.get("resolution", 4)
    now = config["now"]
    half_life = config.get("half_life_secs")
    votes, dups, superseded = ballot(own, twins)
    excluded = outliers(votes, config.get("outlier_k", 3.5), res) if config.get("outliers", True) else set()
    voters = [i for i in range(len(votes)) if i not in excluded]

    def recency(v):
        if method == "seed" or half_life is None:
            return 1.0
        return 0.5 ** (max(0.0, now - v["timestamp"]) / half_life)

    def weight(v):
        c = min(max(v["confidence"], 0.0), 1.0)
        return {"seed": 1.0, "majority": recency(v), "confidence-weighted": recency(v) * c}[method]

    tally = {}
    for i in voters:
        v = votes[i]
        key = (v["domain"], v["problem_class"])
        t = tally.setdefault(key, {"first": i, "votes": 0, "weight": 0.0})
        t["votes"] += 1
        t["weight"] += weight(v)
    own_key = (own["domain"], own["problem_class"]) if 0 in voters else None
    if method == "seed":
        win = max(tally, key=lambda k: (tally[k]["votes"], -tally[k]["first"]))
    else:
        # most weight, then votes, then the own problem, then the smallest name
        best = max((tally[k]["weight"], tally[k]["votes"], k == own_key) for k in tally)
        win = min(k for k in tally if (tally[k]["weight"], tally[k]["votes"], k == own_key) == best)
    n = len(voters)
    k = tally[win]["votes"]
    total = sum(t["weight"] for t in tally.values())
    weighted = tally[win]["weight"] / total if total > 0 else 0.0
    quorum_met = k >= config.get("quorum", 2)
    alert = quorum_met and weighted > config.get("threshold", 0.6)

    a0, b0 = config.get("prior", [1.0, 1.0])
    alpha, beta = a0, b0
    supporters = [i for i in voters if (votes[i]["domain"], votes[i]["problem_class"]) == win]
    for i in voters:
        r = recency(votes[i])
        c = min(max(votes[i]["confidence"], 0.0), 1.0)
        if i in supporters:
            alpha += r * c
            beta += r * (1 - c)
        else:
            beta += r

    groups = {}
    for i in supporters:
        b = tuple(math.floor(x * res) for x in votes[i]["context_vector"])
        g = groups.setdefault(b, [])
        g.append(i)
    best = max(groups, key=lambda b: (len(groups[b]), 0 in groups[b], [-x for x in b]))
    # ties after count and own: the smallest bucket sequence
    top = [b for b in groups if (len(groups[b]), 0 in groups[b]) == (len(groups[best]), 0 in groups[best])]
    best = min(top)
    members = groups[best]
    m = len(best)
    context = [math.fsum(votes[i]["context_vector"][j] for i in members) / len(members) for j in range(m)]
    return {
        "n_agents": n,
        "consensus_problem": ".".join(win),
        "consensus_votes": k,
        "consensus_strength": k / n,
        "weighted_strength": weighted,
        "quorum_met": quorum_met,
        "alert": alert,
        "agreement_voters": len(members),
        "agreement": len(members) / k,
        "agreement_fingerprint": fingerprint(win[0], win[1], context, res),
        "consensus_context": context,
        "posterior_alpha": alpha,
        "posterior_beta": beta,
        "posterior_probability": alpha / (alpha + beta),
        "posterior_lower_bound": beta_quantile(alpha, beta, 0.05),
        "outliers": sorted(votes[i]["agent_id"] for i in excluded),
        "duplicates_ignored": dups,
        "superseded_ignored": superseded,
    }


# ── The cases ────────────────────────────────────────────────────────────────

NEAR = [
    [0.22, 0.88, 0.07, 0.65],
    [0.18, 0.92, 0.03, 0.71],
    [0.20, 0.90, 0.05, 0.70],
    [0.21, 0.89, 0.06, 0.69],
    [0.19, 0.91, 0.04, 0.72],
]
FAR = [0.6, 0.1, 0.5, 0.3]


def case(name, config, own, twins):
    config = {"now": T, **config}
    return {"name": name, "config": config, "own": own, "twins": twins,
            "expected": synthesize(config, own, twins)}


own = pkt("me", "energy-anomaly", 0.8, NEAR[0])
cases = [
    case("seed rules: a lone agent alerts, as in the seed (quorum 1)",
         {"method": "seed", "quorum": 1, "outliers": False}, own, []),
    case("confidence-weighted defaults: a lone agent does not alert",
         {"method": "confidence-weighted"}, own, []),
    case("seed rules: head count, first seen wins the 2-2 tie",
         {"method": "seed", "quorum": 1, "outliers": False},
         pkt("me", "energy-anomaly", 0.2, NEAR[0]),
         [pkt("a", "refrigerant-loss", 0.9, NEAR[1]), pkt("b", "energy-anomaly", 0.2, NEAR[2]),
          pkt("c", "refrigerant-loss", 0.9, NEAR[3])]),
    case("confidence-weighted: two sure agents outweigh two unsure ones",
         {"method": "confidence-weighted"},
         pkt("me", "energy-anomaly", 0.2, NEAR[0]),
         [pkt("a", "refrigerant-loss", 0.9, NEAR[1]), pkt("b", "energy-anomaly", 0.2, NEAR[2]),
          pkt("c", "refrigerant-loss", 0.9, NEAR[3])]),
    case("majority with a 1 h half-life: one fresh vote outweighs two 3 h old ones",
         {"method": "majority", "quorum": 1, "half_life_secs": 3600.0},
         own,
         [pkt("a", "refrigerant-loss", 0.9, NEAR[1], ts=T - 3 * 3600),
          pkt("b", "refrigerant-loss", 0.9, NEAR[2], ts=T - 3 * 3600)]),
    case("confidence-weighted with half-life: Bayes from recency-scaled votes",
         {"method": "confidence-weighted", "half_life_secs": 1800.0},
         own,
         [pkt("a", "energy-anomaly", 0.9, NEAR[1], ts=T - 1800), pkt("b", "energy-anomaly", 0.6, NEAR[2], ts=T - 600),
          pkt("c", "refrigerant-loss", 0.7, NEAR[3], ts=T - 60)]),
    case("quorum 3 not met by two agreeing agents",
         {"method": "majority", "quorum": 3}, own, [pkt("a", "energy-anomaly", 0.9, NEAR[1])]),
    case("one wild agent among five is excluded",
         {"method": "confidence-weighted"}, own,
         [pkt("a", "energy-anomaly", 0.7, NEAR[1]), pkt("wild", "energy-anomaly", 1.0, [9.0, -7.0, 3.0, 12.0]),
          pkt("b", "energy-anomaly", 0.7, NEAR[2]), pkt("c", "energy-anomaly", 0.7, NEAR[3])]),
    case("agreement 3 of 5 on one subject",
         {"method": "confidence-weighted", "outliers": False}, own,
         [pkt("a", "energy-anomaly", 0.7, FAR), pkt("b", "energy-anomaly", 0.7, NEAR[1]),
          pkt("c", "energy-anomaly", 0.7, FAR), pkt("d", "energy-anomaly", 0.7, NEAR[2])]),
    case("agreement at resolution 1: one bucket",
         {"method": "confidence-weighted", "outliers": False, "resolution": 1}, own,
         [pkt("a", "energy-anomaly", 0.7, FAR), pkt("b", "energy-anomaly", 0.7, NEAR[1])]),
    case("duplicates, an echo and a superseded packet under majority",
         {"method": "majority"}, own,
         [pkt("a", "refrigerant-loss", 0.6, NEAR[1], ts=T - 10), pkt("a", "energy-anomaly", 0.7, NEAR[1]),
          pkt("a", "energy-anomaly", 0.7, NEAR[1]), own, pkt("b", "energy-anomaly", 0.9, NEAR[2]),
          pkt("a", "refrigerant-loss", 0.6, NEAR[1], ts=T - 10), pkt("b", "energy-anomaly", 0.9, NEAR[2])]),
    case("prior Beta(2, 8) and threshold 0.8",
         {"method": "confidence-weighted", "prior": [2.0, 8.0], "threshold": 0.8}, own,
         [pkt("a", "energy-anomaly", 0.95, NEAR[1]), pkt("b", "refrigerant-loss", 0.3, NEAR[2])]),
]

print(json.dumps({
    "about": "Synthesis under every method and option (qis_core::synthesize_with). Expected figures were "
             "computed by synthesis_methods.py beside this file, an independent Python implementation of the "
             "documented rules; floats compare within 1e-9 (the lower bound within 1e-7).",
    "cases": cases,
}, indent=1))
