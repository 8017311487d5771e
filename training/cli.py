"""Console entry points of the `m2dino-*` commands.

Each command's `main(argv)` returns its results so that tests and notebooks can use them in-process. The
wrapper pip writes for a console script calls `sys.exit(entry())`, and `sys.exit` prints any return value
that is not an int and exits with status 1; these entries run `main()` and return nothing, so a successful
run exits 0.
"""

import contextlib
import importlib
import json

COMMANDS = {
    "m2dino-convert": "modeling_m2dino.convert_dinov3",
    "m2dino-synth": "m2dino_training.data.synthetic",
    "m2dino-train": "m2dino_training.train",
    "m2dino-evaluate": "m2dino_training.evaluate",
    "m2dino-predict": "m2dino_training.predict",
    "m2dino-score": "m2dino_training.score",
    "m2dino-experiment": "m2dino_training.experiment",
    "m2dino-finetune": "m2dino_training.finetune",
    "m2dino-card": "m2dino_training.cards",
    "m2dino-routing": "m2dino_training.routing",
    "m2dino-bench": "m2dino_training.bench",
    "m2dino-advise": "m2dino_training.advise",
}


@contextlib.contextmanager
def argument_errors_exit():
    """Inside a command: a ValueError about what the command was asked for (a task or split the data lacks)
    stops it with its message, as argparse does; a `DataError`, a problem in the data, is raised as it is."""
    from .data.checks import DataError

    try:
        yield
    except DataError:
        raise
    except ValueError as error:
        raise SystemExit(str(error)) from None


def print_and_write(text: str, results, output: str | None):
    """A command's last step: prints its table and, when `output` names a file, writes its results there as JSON."""
    print(text)
    if output:
        with open(output, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


def _entry(module_name):
    def entry():
        status = importlib.import_module(module_name).main()
        return status if isinstance(status, int) else None

    entry.__doc__ = f"Run `{module_name}.main()` with the command line; exit 0 on success."
    return entry


convert, synth, train, evaluate, predict, score, experiment, finetune, card, routing, bench, advise = (
    _entry(module) for module in COMMANDS.values()
)
