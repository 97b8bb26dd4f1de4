"""CLI verbs that run jobs (train, study, results); each module registers its own sub-parsers."""


def register(sub) -> None:
    """Add the job verbs to the ``nerlab`` parser."""
    from nerlab.platform.commands import results, study, train

    train.register(sub)
    study.register(sub)
    results.register(sub)
    results.register_ui(sub)
