"""Write bc_imbalanced.csv: scikit-learn's breast cancer data with the malignant class cut down to 24
of its 212 rows (357 benign), the imbalanced case of docs/data.md. Deterministic (random_state=0).

    python examples/imbalanced_breast_cancer.py [OUT.csv]
"""

import sys

import pandas as pd
from sklearn.datasets import load_breast_cancer

out = sys.argv[1] if len(sys.argv) > 1 else "bc_imbalanced.csv"
df = load_breast_cancer(as_frame=True).frame
malignant = df[df.target == 0].sample(n=24, random_state=0)
data = pd.concat([malignant, df[df.target == 1]]).sample(frac=1, random_state=0)
data["target"] = data["target"].map({0: "malignant", 1: "benign"})
data.to_csv(out, index=False)
print(f"wrote {out}: {len(data)} rows, {data.target.value_counts().to_dict()}")
