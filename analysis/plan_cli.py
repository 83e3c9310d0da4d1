"""CLI commands for pruning plans (plan, evaluate, apply); filled in with plans.py."""

HANDLERS: dict = {}


def add_commands(sub, add_model_args, add_corpus_args) -> None:
    return None
