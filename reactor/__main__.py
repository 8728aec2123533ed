from .cli import run

run(prog="python -m reactor")
