"""Independent references for tests/analysis.rs.

twonn POINTS N D      -- the TwoNN estimators of spec §1.1/§1.2 written from the text with
                         scipy's pdist (direct differences), on float64 points read from a raw
                         little-endian file; prints `reference idvl kept`.
sls FEATURES LABELS L N D -- the SLS depth criterion as visualization.py runs it: per block the
                         scikit-learn t-SNE (PCA init, random_state 0, library defaults), per-axis
                         min-max, silhouette; top-down scan with alpha 0.3; prints D then scores.
"""
import sys

import numpy as np
from scipy.spatial.distance import pdist, squareform


def twonn(points, fraction):
    d = np.sort(squareform(pdist(points)), axis=1)
    r1, r2 = d[:, 1], d[:, 2]
    keep = (r1 != 0) & (r1 != r2)
    mu = np.sort(r2[keep] / r1[keep])
    n = len(mu)
    f = np.arange(1, n + 1) / n
    x, y = np.log(mu[:-2]), -np.log(1 - f[:-2])
    m = n if fraction is None else min(int(np.floor(n * fraction)), n - 2)
    x, y = x[:m], y[:m]
    return float(np.dot(x, y) / np.dot(x, x)), n


def main():
    cmd = sys.argv[1]
    if cmd == "twonn":
        path, n, dim = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        points = np.fromfile(path, dtype="<f8").reshape(n, dim)
        reference, kept = twonn(points, 0.9)
        idvl, _ = twonn(points, None)
        print(f"{reference:.12f} {idvl:.12f} {kept}")
    elif cmd == "sls":
        from sklearn.manifold import TSNE
        from sklearn.metrics import silhouette_score

        path, labels_path = sys.argv[2], sys.argv[3]
        blocks, n, dim = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
        feats = np.fromfile(path, dtype="<f4").reshape(blocks, n, dim)
        labels = np.fromfile(labels_path, dtype="<i8")
        scores, depth, best = [], None, 0.0
        for layer in range(blocks, 0, -1):
            z = TSNE(n_components=2, init="pca", random_state=0).fit_transform(feats[layer - 1])
            z = (z - z.min(0)) / (z.max(0) - z.min(0))
            sc = silhouette_score(z, labels)
            scores.append(sc)
            if sc >= 0.3 * best:
                depth = layer
            else:
                break
            if layer == blocks:
                best = sc
        print(depth)
        print(" ".join(f"{s:.6f}" for s in scores))


if __name__ == "__main__":
    main()
