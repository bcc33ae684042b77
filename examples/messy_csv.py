"""Write messy.csv: a table with every data problem `methodo data inspect` looks for, at known rows.

    python examples/messy_csv.py messy.csv
    methodo data inspect examples/messy.yaml

200 rows (155 of class 0, 45 of class 1) + 20 exact copies; `const` is constant; `leak` is
10 × label + noise; five blanks in `f2`; a word in the numeric column `f1` (row 60); a missing
label (row 70) and a word in the numeric label column (row 80). Rows are file lines (1 = header).
"""

import sys

import numpy as np


def write(path: str) -> None:
    rng = np.random.default_rng(0)
    y = np.array([0] * 155 + [1] * 45)
    rng.shuffle(y)
    rows = [[f"{rng.normal():.4f}", f"{rng.normal():.4f}", "7", f"{10 * y[i] + rng.normal(0, 0.1):.4f}",
             rng.choice(["red", "green", "blue"]), str(y[i])] for i in range(200)]
    rows += [list(r) for r in rows[:20]]  # exact duplicates
    for line in (5, 9, 40, 41, 150):
        rows[line - 2][1] = ""  # missing values
    rows[60 - 2][0] = "abc"  # a word in a numeric feature column
    rows[70 - 2][5] = ""  # a missing label
    rows[80 - 2][5] = "oops"  # a word in the numeric label column
    with open(path, "w") as f:
        f.write("f1,f2,const,leak,color,label\n" + "\n".join(",".join(r) for r in rows) + "\n")
    print(f"wrote {path}: {len(rows)} rows")


if __name__ == "__main__":
    write(sys.argv[1] if len(sys.argv) > 1 else "messy.csv")
