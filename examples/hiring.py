"""Write hiring.csv: a hiring table with a *planted* bias, the course's recruiting story made testable.

    python examples/hiring.py [OUT.csv] [--rows N]

Deterministic (numpy seed 0; 2,000 rows by default). Each row is an applicant:

- ``years_experience``, ``education``, ``test_score``, ``interview_score``: what merit is made of.
  ``merit`` (never written) is a noisy weighted sum of them, the same in every group.
- ``gender`` (F / M, 35 % women) and ``age_band`` (``under_30``, ``30_60``, ``over_60``: about 2 %,
  a group too small for its metrics to mean anything) are the sensitive columns (``data.sensitive``).
- ``womens_club``: 1 when the résumé lists a women's club (60 % of women, 2 % of men). It says
  nothing about merit; it is the **proxy** through which a model trained without ``gender`` still
  learns the bias (the recruiting model that penalized the word "women's").
- ``hired`` (yes / no): the **historical** decision. Applicants above the merit bar were hired,
  except that 40 % of the qualified women were turned down (the planted **label bias**); 5 % of
  every decision is noise.

So, at equal features, the labels differ by gender (``label_bias``), ``womens_club`` predicts
gender (``proxy_feature``), a model trained on these labels selects fewer women
(``group_disparity``), and ``over_60`` is too small to judge (``group_underrepresented``).
"""

from __future__ import annotations

import argparse

import numpy as np

EDUCATION = ["highschool", "bachelor", "master", "phd"]


def make(rows: int = 2000, seed: int = 0, penalty: float = 0.40, club_share: tuple[float, float] = (0.60, 0.02)):
    """The table as a dict of columns (numpy arrays), in the order of the CSV. ``penalty``: the share of
    qualified women turned down (0: fair labels); ``club_share``: the share of women and of men in a women's club
    (equal: no proxy)."""
    rng = np.random.default_rng(seed)
    woman = rng.random(rows) < 0.35
    age_band = np.where(rng.random(rows) < 0.02, "over_60", np.where(rng.random(rows) < 0.45, "under_30", "30_60"))
    years = np.clip(rng.gamma(2.0, 3.0, rows), 0, 40).round(1)
    edu = rng.choice(4, rows, p=[0.3, 0.4, 0.22, 0.08])
    test_score = np.clip(rng.normal(60, 15, rows), 0, 100).round(0)
    interview = np.clip(rng.normal(5, 2, rows), 0, 10).round(1)
    club = np.where(woman, rng.random(rows) < club_share[0], rng.random(rows) < club_share[1]).astype(int)
    merit = (0.12 * years + 0.6 * edu + 0.05 * (test_score - 60) + 0.45 * (interview - 5)
             + rng.normal(0, 0.6, rows))
    qualified = merit > np.quantile(merit, 0.5)
    hired = qualified & ~(woman & (rng.random(rows) < penalty))  # the planted historical penalty
    noise = rng.random(rows) < 0.05
    hired = hired ^ noise
    return {
        "years_experience": years, "education": np.array(EDUCATION)[edu], "test_score": test_score.astype(int),
        "interview_score": interview, "womens_club": club, "gender": np.where(woman, "F", "M"),
        "age_band": age_band, "hired": np.where(hired, "yes", "no"),
    }


def write(path: str, rows: int = 2000, seed: int = 0, **options) -> dict:
    """Write the CSV to ``path`` (``options``: those of :func:`make`); returns the columns."""
    import csv

    cols = make(rows, seed, **options)
    names = list(cols)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(names)
        w.writerows(zip(*(cols[n].tolist() for n in names)))
    return cols


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", default="hiring.csv")
    ap.add_argument("--rows", type=int, default=2000)
    args = ap.parse_args()
    c = write(args.out, args.rows)
    w = c["gender"] == "F"
    rate = lambda m: (c["hired"][m] == "yes").mean()  # noqa: E731
    print(f"wrote {args.out}: {args.rows} rows; hired: women {rate(w):.2f}, men {rate(~w):.2f}")
