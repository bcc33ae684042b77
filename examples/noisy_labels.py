"""Write noisy_digits.csv: scikit-learn's digits as a table with 15% of its labels flipped, at known rows;
then score a label_issues.csv against the rows that were flipped.

    python examples/noisy_labels.py noisy_digits.csv
    methodo data label-issues examples/noisy_digits.yaml
    python examples/noisy_labels.py --score label_issues.csv

1797 rows: 64 pixel columns ``px0..px63`` (0..16) and ``label``. A seeded 15% of the rows (269) get
another class, each of the 9 others as likely (symmetric noise). ``--score`` recomputes the same
rows and prints the precision and recall of the rows a label_issues.csv flags.
"""

import csv
import sys

import numpy as np

NOISE = 0.15
SEED = 12


def noisy_digits(noise: float = NOISE, seed: int = SEED):
    """``(X, noisy labels, true labels, flipped rows)``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    y = d.target.copy()
    flipped = rng.choice(len(y), int(noise * len(y)), replace=False)
    y[flipped] = (y[flipped] + rng.integers(1, 10, len(flipped))) % 10  # another class, each as likely
    return d.data.astype(int), y, d.target, np.sort(flipped)


def write(path: str) -> None:
    X, y, _, flipped = noisy_digits()
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([f"px{i}" for i in range(X.shape[1])] + ["label"])
        w.writerows([*x, t] for x, t in zip(X.tolist(), y.tolist()))
    print(f"wrote {path}: {len(y)} rows, {len(flipped)} labels flipped ({100 * len(flipped) / len(y):.0f}%)")


def score(issues: str) -> None:
    flipped = set(noisy_digits()[3].tolist())
    with open(issues, newline="") as fh:
        found = {int(r["row"]) for r in csv.DictReader(fh)}
    hits = len(found & flipped)
    print(f"{issues}: {len(found)} rows flagged, {hits} of them flipped: precision "
          f"{hits / max(len(found), 1):.3f}, recall {hits / len(flipped):.3f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--score"]:
        score(sys.argv[2] if len(sys.argv) > 2 else "label_issues.csv")
    else:
        write(sys.argv[1] if len(sys.argv) > 1 else "noisy_digits.csv")
