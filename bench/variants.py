"""The named configurations the benchmarks compare: a name → TrainConfig overrides."""
MLTP = {"procedure": "mltp"}
VARIANTS = {"base": {"method": "base"}, "gda": {"method": "gda"}, "gda-mps": {"method": "gda-mps"},
            "pcr": {"method": "pcr"}, "mgr": {"method": "mgr"}, "mgr-first": {"method": "mgr", "order": "first"},
            "mgr-second": {"method": "mgr", "order": "second"},
            "mgr-mlp": {"method": "mgr", "finder": "mlp"}, "mgr-linear": {"method": "mgr", "finder": "linear"},
            **{f"mltp-{v}": {"method": "base", **MLTP, "mltp_variant": v} for v in ("fo", "full", "conv", "fc")},
            "mgr-co": {"method": "mgr", "co_learner": True},
            "mgr-co-linear": {"method": "mgr", "co_learner": True, "co_learner_arch": "linear"},
            "pcr-mltp": {"method": "pcr", **MLTP}, "mgr-mltp": {"method": "mgr", **MLTP},
            "mgr-mltp-co": {"method": "mgr", **MLTP, "co_learner": True},
            "mltp-fo-co": {"method": "base", **MLTP, "co_learner": True}}
