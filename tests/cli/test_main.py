"""``hublink.cli.main`` in-process, where hypothesis can try hundreds of inputs: any bytes as
a config file, random argv for every command; each ends in a message and a contract exit code.

The command line run as an operator runs it is in tests/contract/test_s05_cli.py.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from hublink.cli import build_parser, main
from hublink.errors import HublinkError


def run_main(*argv: str) -> tuple[int, str, str]:
    """``hublink ARGV`` in this process (hypothesis runs hundreds): exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@settings(max_examples=150, deadline=None)
@given(
    raw=st.binary(max_size=200)
    | st.text(max_size=100).map(lambda t: t.encode("latin-1", "replace"))
)
def test_any_bytes_as_a_config_file_never_give_a_traceback(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "hublink.toml"
        config.write_bytes(raw)
        os.environ["HUBLINK_STATE_DIR"] = str(Path(folder) / "state")
        os.environ["HUBLINK_RUNTIME_DIR"] = str(Path(folder) / "run")
        try:
            code, _, err = run_main("--config", str(config), "status")
        finally:
            del os.environ["HUBLINK_STATE_DIR"], os.environ["HUBLINK_RUNTIME_DIR"]
    assert code in (0, 78), err
    if code == 78:
        assert f"config file {config}" in err or "invalid configuration" in err
    assert "internal error" not in err


#: Commands whose every parse is safe to run here, with the options each takes.
COMMAND_OPTIONS: dict[str, list[str]] = {
    "status": ["--json"],
    "send": [
        *("user_sync", "plugin_installed", "--data", "-", "@", "@.", "{}", '{"users": []}'),
        # JSON that json.loads refuses or Python cannot hold faithfully (item 6's kind).
        *('{"n": NaN}', '{"n": 1e999}', '{"n": "\\ud83d"}', "1" * 5000, "[" * 5000),
    ],
    "backup": ["--output", "--force", "out.age"],
    "restore": ["--identity", "--output", "--force", "x.age", "id.txt", "out.db"],
    "tunnel-config": [],
    "unregister": ["--yes"],
    "register": ["--email", "--password-stdin", "--name", "--address", "--force", "a@b.c"],
    "doctor": ["--json"],
    "run": [],
    "demo": ["--keep"],
    "devcloud": ["--host", "--port", "--frps", "--frps-port", "--data-dir", "70000", "-1"],
}


#: Commands that would run for long when their arguments parse: only their
#: parse failures are tried here (the commands' own tests run them).
LONG_RUNNING = {"run", "demo", "devcloud"}


#: Random words: option-like, path-like (inside the test's folder), or any text,
#: including the lone surrogates that non-UTF-8 bytes in argv become.
WORDS = st.one_of(
    st.sampled_from(["--config", "--help", "-", "--", "--json", "--yes", ""]),
    st.text(alphabet=st.characters(blacklist_characters="/\x00"), max_size=12),
    st.sampled_from(["\udcff", "caf\udce9", "@\udcff.json", "ñandú"]),
)


@settings(max_examples=250, deadline=None)
@given(data=st.data())
def test_random_argv_never_gives_a_traceback(data: st.DataObject) -> None:
    command = data.draw(st.sampled_from(sorted(COMMAND_OPTIONS)))
    # Mostly the command's own words, so that many argv get past the parser.
    known = data.draw(st.lists(st.sampled_from(COMMAND_OPTIONS[command] or ["--json"]), max_size=5))
    stray = data.draw(st.lists(WORDS, max_size=1))
    argv = [command, *data.draw(st.permutations(known + stray))]
    if command in LONG_RUNNING:
        parsed = contextlib.suppress(HublinkError, SystemExit)
        with (
            parsed,
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            build_parser().parse_args(argv)
            assume(False)  # it parses: it would really run
    with tempfile.TemporaryDirectory() as folder:
        cwd = os.getcwd()
        os.chdir(folder)
        os.environ.update(
            HUBLINK_STATE_DIR=str(Path(folder) / "state"),
            HUBLINK_RUNTIME_DIR=str(Path(folder) / "run"),
            HUBLINK_CLOUD_URL="http://127.0.0.1:9",  # refused at once: nothing leaves the box
        )
        try:
            code, _, err = run_main(*argv)
        finally:
            os.chdir(cwd)
            for key in ("HUBLINK_STATE_DIR", "HUBLINK_RUNTIME_DIR", "HUBLINK_CLOUD_URL"):
                del os.environ[key]
    event(f"{command} exit {code}")
    assert code in (0, 1, 2, 69, 77, 78), (argv, err)
    assert "Traceback" not in err and "internal error" not in err, (argv, err)
