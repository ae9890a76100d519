"""The named configurations the benchmarks compare: a name → TrainConfig overrides."""
MLTP = {"procedure": "mltp"}
VARIANTS = {"base": {"method": "base"}, "gda": {"method": "gda"}, "gda-mps": {"method": "gda-mps"},
            "pcr": {"method": "pcr"}, "mgr": {"method": "mgr"},
            "mgr-mlp": {"method": "mgr", "finder": "mlp"}, "mgr-linear": {"method": "mgr", "finder": "linear"},
            **{f"mltp-{v}": {"method": "base", **MLTP, "mltp_variant": v} for v in ("fo", "full", "conv", "fc")},
            "mgr-co": {"method": "mgr", "co_learner": True},
            "mgr-co-linear": {"method": "mgr", "co_learner": True, "co_learner_arch": "linear"},
            "pcr-mltp": {"method": "pcr", **MLTP}, "mgr-mltp": {"method": "mgr", **MLTP},
            "mgr-mltp-co": {"method": "mgr", **MLTP, "co_learner": True},
            "mltp-fo-co": {"method": "base", **MLTP, "co_learner": True}}


def add_setting_options(p, methods: str) -> None:
    """The options the per-method benchmarks share: the setting, the methods (default `methods`),
    the device and the CPU threads."""
    p.add_argument("--dataset", default="digits")
    p.add_argument("--ratio", type=float, default=0.1)
    p.add_argument("--model", default="smallcnn")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--methods", default=methods)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")


def method_names(p, methods: str) -> list[str]:
    """The comma-separated variant names, or the parser's error naming the unknown ones."""
    names = methods.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    return names


def parse_overrides(p, items: list[str], excluded=("data", "seed", "steps")) -> dict:
    """--set FIELD=VALUE items as {field: value}: numbers, true/false and null read as JSON, anything
    else kept as a string. A FIELD that is not a training option, or one the benchmark sets itself
    (`excluded`), is the parser's error, naming the allowed ones."""
    import json

    from mgr.trainer import TrainConfig
    allowed = [f for f in TrainConfig.__dataclass_fields__ if f not in excluded]
    overrides = {}
    for item in items:
        field, sep, value = item.partition("=")
        if not sep or field not in allowed:
            named = ", ".join(excluded[:-1]) + " and " + excluded[-1] if len(excluded) > 1 else "".join(excluded)
            p.error(f"--set {item!r}: expected FIELD=VALUE with FIELD a training option other than {named} "
                    f"({', '.join(allowed)})")
        try:
            overrides[field] = json.loads(value)  # numbers, true/false, null
        except ValueError:
            overrides[field] = value
    return overrides
