import sys, numpy as np
f = np.load(sys.argv[1], allow_pickle=True)
own = f["own"]; Z = [f[f"arr_{i}"] for i in range(len(own))]
stride = int(sys.argv[2]) if len(sys.argv) > 2 else 1
def ranks(S):
    out = []
    for z, o in zip(Z, own):
        o = o[o % stride == 0]
        if not len(o): out.append(-1); continue
        m = z[S][:, ::stride].max(axis=0)
        out.append(int((m > m[o // stride].max()).sum()))
    return out
def cost(r): return max(r)
if len(sys.argv) > 3:
    S = [int(x) for x in sys.argv[3].split(",")]
    print(S, ranks(S)); sys.exit()
S = []
for k in range(1, 19):
    best = min((h for h in range(Z[0].shape[0]) if h not in S), key=lambda h: (cost(ranks(S + [h])), sum(ranks(S + [h]))))
    S.append(best)
    print(k, S, ranks(S), flush=True)
print("all", ranks(list(range(Z[0].shape[0]))))
