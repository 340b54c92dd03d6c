"""Driving the ``osrm`` command line in-process from tests."""

from osrm_gui.cli import main


def run(capsys, *argv):
    """Exit code, stdout and stderr of one command (argparse's own refusals included)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]
