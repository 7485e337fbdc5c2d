"""per-(layer, KV head) coarse scores of the padded stores -> greedy head subsets"""
import pickle, sys, numpy as np
sys.path.insert(0, "benchmarks")
from coarse_study import _inputs, padded
from edge_namm.engine.recall import newest_queries, as_float32
caps = pickle.loads(open(sys.argv[1], "rb").read())
pad = int(sys.argv[2])
L = caps[0]["cold_keys"].shape[0]; G = caps[0]["n_head_kv"]
Z, OWN = [], []
for j, cap in enumerate(caps):
    keys, logical = padded(cap, caps[:j] + caps[j+1:], pad)
    q, _, lse, *_ = _inputs(cap, "all/16", L)
    q_new, lse_new = newest_queries(q, lse, 32, 16)
    na, ne = cap["needle"]
    own = np.flatnonzero((cap["cold_logical"] >= na) & (cap["cold_logical"] < ne))
    d = keys.shape[2] // G
    z = np.empty((L * G, keys.shape[1]), dtype=np.float32)
    for l in range(L):
        k = as_float32(keys[l])
        for g in range(G):
            z[l * G + g] = (q_new[l, g] @ k[:, g*d:(g+1)*d].T - lse_new[l, g][:, None]).max(axis=0)
    Z.append(z); OWN.append(own)
    print("prompt", j, flush=True)
np.savez(sys.argv[3], *Z, own=np.array(OWN, dtype=object), allow_pickle=True)
