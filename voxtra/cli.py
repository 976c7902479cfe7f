"""The ``voxtra`` command: ``demo``, ``run``, ``serve``, ``console``, ``init``, ``doctor``.

``demo`` runs ``examples/demo.py`` of the clone the package is installed from: the demo
drives the sandbox and a SIP phone from :mod:`voxtra.testing`, test tooling the
package itself never imports.

A command line program is an application, so unlike the library it configures logging
(``--log-level``, default WARNING; ``run`` defaults to INFO so a running app is visible).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from voxtra.ari.errors import AriConnectionError, AriError, AriUnauthorized
from voxtra.errors import ConfigError
from voxtra.logs import use_json_logs

__all__ = ["load_app", "main"]

_DEPENDENCIES = (
    "aiohttp",
    "pydantic",
    "numpy",
    "anyio",
    "soxr",
    "webrtcvad-wheels",
    "pocketsphinx",
    "espeakng-loader",
    "pjsua2-python",
)


def load_app(spec: str, *, command: str = "run") -> Any:
    """The object named by ``module:attribute`` (``module`` alone means ``module:app``).

    A path to a ``.py`` file works as the module. An attribute that is a callable but
    not an app (a factory) is called without arguments. ``command`` names the ``voxtra``
    command in the error a bad ``spec`` exits with.
    """
    from voxtra.app import VoxtraApp

    module_name, _, attr = spec.partition(":")
    attr = attr or "app"
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).resolve()
            spec_obj = importlib.util.spec_from_file_location(path.stem, path)
            if spec_obj is None or spec_obj.loader is None:
                raise ImportError(f"cannot load {path}")
            module = importlib.util.module_from_spec(spec_obj)
            sys.modules[path.stem] = module
            spec_obj.loader.exec_module(module)
        else:
            sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except (ImportError, OSError) as exc:
        raise SystemExit(f"voxtra {command}: cannot import {module_name!r}: {exc}") from exc
    obj = getattr(module, attr, None)
    if obj is None:
        raise SystemExit(f"voxtra {command}: {module_name!r} has no attribute {attr!r}")
    if not isinstance(obj, VoxtraApp) and callable(obj):
        obj = obj()
    if not isinstance(obj, VoxtraApp):
        raise SystemExit(f"voxtra {command}: {spec} is a {type(obj).__name__}, not a VoxtraApp")
    return obj


_DEMO_SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "demo.py"
"""The demo lives with the examples, not in the package: it drives the sandbox and a SIP
phone from :mod:`voxtra.testing`, which the runtime never imports."""


def _cmd_demo(args: argparse.Namespace) -> int:
    """Run ``examples/demo.py`` of the source checkout this package is installed from."""
    if not _DEMO_SCRIPT.is_file():
        raise SystemExit(
            "voxtra demo: the demo runs from a clone of the Voxtra repository "
            f"(./scripts/demo); {_DEMO_SCRIPT} is not there"
        )
    spec = importlib.util.spec_from_file_location("voxtra_example_demo", _DEMO_SCRIPT)
    if spec is None or spec.loader is None:
        raise SystemExit(f"voxtra demo: cannot load {_DEMO_SCRIPT}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # findable by name, as a script run directly is
    spec.loader.exec_module(module)
    return int(module.main(args.demo_args))


def _prepare_run(args: argparse.Namespace, command: str = "run") -> Any:
    """The app ``voxtra run`` (or ``command``) would run, with ``--config`` and
    ``--app-name`` applied.

    ``--config`` sets ``VOXTRA_CONFIG`` before the module is imported, so an app built
    there reads that file (what its code passes explicitly still wins, as always).
    ``--app-name`` is the command line's own choice and wins over everything.
    """
    if args.config is not None:
        os.environ["VOXTRA_CONFIG"] = _config_path(args.config)
    app = load_app(args.app, command=command)
    if args.app_name is not None and app.app_name != args.app_name:
        app.use_app_name(args.app_name)
    return app


def _config_path(option: str) -> str:
    """``--config``'s file, absolute; a :class:`ConfigError` (exit 2) if there is none.

    It was a SystemExit with a message, i.e. exit 1, where every other bad setting
    (``VOXTRA_CONFIG`` naming a missing file included) exits 2, as docs/testing.md says.
    """
    path = Path(option)
    if not path.is_file():
        problem = "not a file" if path.exists() else "no such file"
        raise ConfigError(f"--config {option}: {problem}")
    return str(path.resolve())


def _cmd_run(args: argparse.Namespace) -> int:
    app = _prepare_run(args)
    if args.local_llm:
        # Loaded here, as the other commands' extras are: `voxtra run` alone needs none.
        from voxtra.local import LocalLLM

        LocalLLM(threads=args.llm_threads).attach(app, log=logging.getLogger("voxtra.local").info)
    try:
        app.run(log_level=args.log_level)  # --log-level wins over settings.log_level
    except AriError as exc:
        return _ari_start_failed("run", app, exc)
    return 0


def _ari_failure(url: str, username: str, exc: AriError) -> str:
    """One line for ARI refusing or missing its first request, with what to check.

    A 401 was reported as "unreachable", next to advice to start the sandbox: the
    wrong thing to look at when Asterisk answered and refused the user.
    """
    what = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, AriUnauthorized):
        return (
            f"ARI at {url}: user {username!r} refused ({what}); check the ARI user and "
            "password (VOXTRA_USERNAME, VOXTRA_PASSWORD; ari.conf)"
        )
    return f"ARI at {url}: unreachable ({what})"


def _ari_start_failed(command: str, app: Any, exc: AriError) -> int:
    # The app's start() failed and closed what it had opened (VoxtraApp.start); what is
    # left is the user's to fix, said in one line: it was a traceback (54 lines for a
    # refused connection, 32 for a 401) whose last line was the only one that mattered.
    settings = app.settings
    print(
        f"voxtra {command}: {_ari_failure(settings.ari_url, settings.username, exc)}",
        file=sys.stderr,
    )
    return 1


def _cmd_serve(args: argparse.Namespace) -> int:
    # Imported here: the platform needs the `platform` extra (FastAPI, SQLAlchemy...),
    # which `voxtra run` and `doctor` do not.
    try:
        from voxtra.platform.serve import serve
    except ImportError as exc:
        raise SystemExit(
            f"voxtra serve: the platform is not installed ({exc}); pip install 'voxtra[platform]'"
        ) from None
    from voxtra.config import SettingsError

    app = _prepare_run(args, "serve")
    overrides = {
        k: v
        for k, v in (
            ("host", args.host),
            ("port", args.port),
            ("database_url", args.database_url),
        )
        if v is not None
    }
    if overrides:
        try:
            app.settings.platform = type(app.settings.platform)(
                **{**app.settings.platform.model_dump(), **overrides}
            )
        except SettingsError as exc:
            # Said of the option given: it was "config error in arguments: port: Input
            # should be less than or equal to 65535", naming no option of the command.
            problems = [(f"--{path.replace('_', '-')}", msg) for path, msg in exc.problems]
            raise SettingsError("the command line", problems) from None
    try:
        serve(app, log_level=args.log_level)
    except AriError as exc:
        return _ari_start_failed("serve", app, exc)
    return 0


#: Seconds ``doctor`` waits for ARI's answer.
_DOCTOR_TIMEOUT = 5.0


async def _check_ari(config_file: str | None = None) -> tuple[bool, str]:
    from voxtra.ari.client import AriClient
    from voxtra.config import SettingsError, VoxtraSettings, load_settings

    try:
        settings = load_settings(config_file=config_file)
    except SettingsError as exc:
        # The message names the setting, never a secret's value (see voxtra.config).
        return False, f"settings: {exc}"
    try:
        async with AriClient(settings.ari_url, settings.username, settings.password) as ari:
            info = await asyncio.wait_for(ari.asterisk.info(), _DOCTOR_TIMEOUT)
    except AriError as exc:
        message = _ari_failure(settings.ari_url, settings.username, exc)
        if isinstance(exc, AriConnectionError) and (
            settings.ari_url == VoxtraSettings.model_fields["ari_url"].default
        ):
            # Not `voxtra demo`: it stops the sandbox it started when the call is over.
            message += (
                "\n  (set VOXTRA_ARI_URL, or start the Asterisk sandbox: "
                "python -m voxtra.testing.asterisk up)"
            )
        return False, message
    except TimeoutError:
        # Something took the connection and said nothing: it was reported as
        # "unreachable (TimeoutError: )", an empty reason.
        return False, (
            f"ARI at {settings.ari_url}: no answer within {_DOCTOR_TIMEOUT:g} s "
            "(is it Asterisk's HTTP server, http.conf?)"
        )
    except Exception as exc:  # any other failure is the answer here too, reported as text
        return False, f"ARI at {settings.ari_url}: unreachable ({type(exc).__name__}: {exc})"
    version = info.system.version if info.system is not None else "?"
    return True, f"ARI at {settings.ari_url}: reachable, Asterisk {version}"


def _cmd_console(args: argparse.Namespace) -> int:
    # A developer command: the console runs the app on the in-process FakeAsterisk,
    # loaded here only (importing voxtra.cli loads no test tooling).
    from voxtra.testing.console import run_console

    app = load_app(args.app, command="console")
    return asyncio.run(run_console(app, extension=args.extension, caller=args.caller))


def _cmd_init(args: argparse.Namespace) -> int:
    from voxtra.errors import ConfigError
    from voxtra.scaffold import create_project

    try:
        written = create_project(args.directory, args.name)
    except ConfigError as exc:
        print(f"voxtra init: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"  created {path}")
    print(f"next: cd {args.directory} && pip install -e '.[dev]' && pytest")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    import voxtra

    # --config checked before any output: a missing file is a usage error (exit 2).
    config_file = None if args.config is None else _config_path(args.config)
    print(f"voxtra {voxtra.__version__}, Python {platform.python_version()} ({sys.executable})")
    for name in _DEPENDENCIES:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = "not installed"
        print(f"  {name:18} {version}")
    ok, message = asyncio.run(_check_ari(config_file))
    print(message)
    return 0 if ok else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voxtra", description=__doc__.splitlines()[0])
    _add_logging_options(parser, default=None)
    # The same options after the command too (`voxtra run --log-format json app.py`, as
    # docs/tools.md writes it): given only before it, the command's parser took "json"
    # for the app and refused the rest. SUPPRESS: an option not given there leaves the
    # value given before the command.
    common = argparse.ArgumentParser(add_help=False)
    _add_logging_options(common, default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        parents=[common],
        add_help=False,  # `voxtra demo --help` is the demo's own help
        help="call the embedded demo assistant from a SIP phone (voxtra demo --help)",
    )
    demo.set_defaults(func=_cmd_demo, default_level="WARNING")
    run = sub.add_parser("run", parents=[common], help="run a VoxtraApp: voxtra run module:app")
    run.add_argument("app", help="module:attribute, or path/to/file.py:attribute")
    run.add_argument(
        "--config",
        default=None,
        help="YAML settings file (as VOXTRA_CONFIG; the app's explicit arguments still win)",
    )
    run.add_argument("--app-name", default=None, help="Stasis app name (wins over settings)")
    run.add_argument(
        "--local-llm",
        action="store_true",
        help="the voice agent talks to a local LLM (llama-server, Qwen2.5-Coder-1.5B), "
        "started and stopped with the app (docs/local-llm.md)",
    )
    run.add_argument(
        "--llm-threads", type=int, default=1, help="llama-server threads (--local-llm; 1)"
    )
    run.set_defaults(func=_cmd_run, default_level="INFO")
    serve = sub.add_parser(
        "serve",
        parents=[common],
        help="run a VoxtraApp with the call platform's HTTP API: voxtra serve module:app",
    )
    serve.add_argument("app", help="module:attribute, or path/to/file.py:attribute")
    serve.add_argument("--config", default=None, help="YAML settings file (as VOXTRA_CONFIG)")
    serve.add_argument("--app-name", default=None, help="Stasis app name (wins over settings)")
    serve.add_argument("--host", default=None, help="API address (settings: platform.host)")
    serve.add_argument("--port", type=int, default=None, help="API port (platform.port)")
    serve.add_argument("--database-url", default=None, help="store URL (platform.database_url)")
    serve.set_defaults(func=_cmd_serve, default_level="INFO")
    console = sub.add_parser(
        "console",
        parents=[common],
        help="talk to an app's handler from the terminal, no PBX: voxtra console app.py",
    )
    console.add_argument("app", help="module:attribute, or path/to/file.py:attribute")
    console.add_argument("--extension", default="1000", help="the extension called (1000)")
    console.add_argument("--caller", default="console", help="the caller's number")
    console.set_defaults(func=_cmd_console, default_level="WARNING")
    init = sub.add_parser(
        "init", parents=[common], help="a new project: an app, its tests, a README"
    )
    init.add_argument("directory", help="where to create it (new or empty)")
    init.add_argument("--name", default=None, help="project and Stasis app name")
    init.set_defaults(func=_cmd_init, default_level="WARNING")
    doctor = sub.add_parser(
        "doctor", parents=[common], help="check ARI reachability, print versions"
    )
    # The file `run --config` reads: without it, doctor checked the default ARI URL
    # (or VOXTRA_*), not the Asterisk the app would use.
    doctor.add_argument("--config", default=None, help="YAML settings file (as VOXTRA_CONFIG)")
    doctor.set_defaults(func=_cmd_doctor, default_level="WARNING")
    return parser


def _add_logging_options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--log-level",
        default=default,
        type=_log_level,
        help="DEBUG, INFO, WARNING (default; run and serve: INFO)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=default,
        help="json: one JSON object per record, with the call id (for log shippers)",
    )


def _log_level(value: str) -> str:
    level = value.strip().upper()
    level = "WARNING" if level == "WARN" else level
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    return level


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    # The demo's options belong to examples/demo.py, which parses them itself.
    args, extra = parser.parse_known_args(argv)
    if args.command == "demo":
        args.demo_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    level = (args.log_level or args.default_level).upper()
    if args.log_format == "json":  # None: not given, text
        use_json_logs(level)
    else:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except ConfigError as exc:
        # Settings, an app's arguments, --config or --port that cannot be used: the user's
        # to fix, said in one line (a traceback's last line said it, under 30 others).
        print(f"voxtra {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
