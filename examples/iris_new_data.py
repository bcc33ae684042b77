"""New data for a trained iris model (docs/use.md): ``iris_new.csv``, every iris row without its label and
with the columns in another order (what `methodo predict` reads), and ``iris_shifted.csv``, labeled rows
whose class mix and sepal width moved away from the training data (what `methodo evaluate` flags)."""

from __future__ import annotations

import pandas as pd
import sklearn.datasets

iris = sklearn.datasets.load_iris(as_frame=True)
df = iris.frame.drop(columns="target")
df.iloc[:, ::-1].to_csv("iris_new.csv", index=False)
labeled = df.assign(target=iris.target_names[iris.target])
shifted = pd.concat([labeled[labeled.target == "setosa"], labeled[labeled.target != "setosa"].iloc[::10]])
shifted = shifted.assign(**{"sepal width (cm)": shifted["sepal width (cm)"] + 1.5})
shifted.to_csv("iris_shifted.csv", index=False)
print(f"wrote iris_new.csv ({len(df)} rows) and iris_shifted.csv ({len(shifted)} rows)")
