"""CLI verbs that run jobs (train, study, results); each module registers its own sub-parsers."""


def register(sub) -> None:
    """Add the job verbs to the ``nerlab`` parser."""
    from nerlab.platform.commands import study, train

    train.register(sub)
    study.register(sub)
    study.register_ui(sub)
