"""Working across runs: re-run one and check it gives the same numbers (:mod:`.reproduce`), put runs
side by side (:mod:`.compare`), start a structured project (:mod:`.scaffold`)."""
