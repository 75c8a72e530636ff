"""`hallgw`: run the gateway, check a config, run the demo hall."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final

from gateway import __version__
from gateway.clock import Clock, ScaledClock
from gateway.config import Config, ConfigError, Secrets, load_config_or_report, resolve_secrets
from gateway.errors import GatewayError
from gateway.registry import unsupported_devices

log = logging.getLogger("hallgw")

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_CONFIG: Final = 2  # DEVELOPERS.md: config errors exit 2 with the field's path


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command == "check-config":
        return check_config(args.file)
    if args.command == "run":
        return run_gateway(
            args.config,
            clock_start=args.clock_start,
            clock_speed=args.clock_speed,
            clock_anchor=args.clock_anchor,
        )
    if args.command == "attendance":
        from gateway.ledger import print_ledger  # noqa: PLC0415  # keeps check-config light

        return print_ledger(
            args.config,
            day=args.date,
            month=args.month,
            csv_path=args.csv,
            include_flagged=args.include_flagged,
        )
    if args.command == "board":
        from gateway.board import print_snapshot  # noqa: PLC0415  # keeps check-config light

        return print_snapshot(args.config)
    from gateway import demo as simulated  # noqa: PLC0415  # it pulls in the simulators

    if args.command == "simulate":
        from simulators.hall import HallShape  # noqa: PLC0415

        shape = HallShape(
            windows=args.windows,
            floors=args.floors,
            clocks=args.clocks,
            kiosks=args.kiosks,
            leds=args.leds,
        )
        return run_until_stopped(
            simulated.simulate_hall(
                shape,
                speed=args.speed,
                start=args.start,
                days=args.days,
                http_port=args.http_port,
                keep=args.keep,
            )
        )
    return run_until_stopped(
        simulated.run_demo(
            http_port=args.http_port,
            keep=args.keep,
            speed=args.speed,
            start=args.start,
            mqtt=args.mqtt,
        )
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hallgw", description="Edge gateway for the hardware of a government service hall."
    )
    parser.add_argument("--version", action="version", version=f"hall-gateway {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run the gateway")
    run.add_argument("-c", "--config", required=True, help="the YAML config file")
    run.add_argument(
        "--clock-start",
        type=_moment,
        metavar="YYYY-MM-DDTHH:MM",
        help="simulation: hall time starts here (in the hall's zone) instead of now",
    )
    run.add_argument(
        "--clock-speed",
        type=float,
        default=1.0,
        metavar="X",
        help="simulation: hall time runs X times faster than real time",
    )
    run.add_argument(
        "--clock-anchor",
        type=float,
        metavar="EPOCH",
        help="simulation: the POSIX time at which hall time is --clock-start (default: now)",
    )
    check = commands.add_parser("check-config", help="validate a config file; exit 2 if invalid")
    check.add_argument("file")
    ledger = commands.add_parser(
        "attendance", help="print the attendance ledger of a day or a month, from the store"
    )
    ledger.add_argument("-c", "--config", required=True, help="the YAML config file")
    span = ledger.add_mutually_exclusive_group(required=True)
    span.add_argument("--date", type=_date, metavar="YYYY-MM-DD", help="one day, every person")
    span.add_argument("--month", type=_month, metavar="YYYY-MM", help="a month, person by person")
    ledger.add_argument("--csv", metavar="FILE", help="also write the ledger to FILE as CSV")
    ledger.add_argument(
        "--include-flagged",
        action="store_true",
        help="count punches journaled with an implausible time (a clock's delayed backlog)",
    )
    simulate = commands.add_parser("simulate", help="simulate a whole hall against a gateway")
    what = simulate.add_subparsers(dest="what", required=True, metavar="WHAT")
    hall = what.add_parser(
        "hall", help="a generated hall of N windows, its gateway, and working days at speed X"
    )
    hall.add_argument("--windows", type=_positive, default=24)
    hall.add_argument("--floors", type=_positive, default=2)
    hall.add_argument("--clocks", type=_positive, default=2, help="punch clocks")
    hall.add_argument("--kiosks", type=_positive, default=4)
    hall.add_argument("--leds", type=_positive, default=2, help="LED strips")
    hall.add_argument("--speed", type=float, default=1.0, help="hall time runs X times faster")
    hall.add_argument(
        "--start",
        type=_moment,
        metavar="YYYY-MM-DDTHH:MM",
        help="hall time to start at (default: now)",
    )
    hall.add_argument("--days", type=int, default=0, help="working days to play (0: until Ctrl-C)")
    hall.add_argument("--http-port", type=int, default=8080, help="main listener (0: any free)")
    hall.add_argument("--keep", action="store_true", help="keep the state directory")
    board = commands.add_parser("board", help="print the running gateway's hall board")
    board.add_argument("-c", "--config", required=True, help="the YAML config file")
    board.add_argument(
        "--snapshot",
        action="store_true",
        required=True,
        help="print the board now, as tables (who is out, off-post, unattended windows)",
    )
    demo = commands.add_parser("demo", help="run a simulated hall with the gateway")
    demo.add_argument("--http-port", type=int, default=8080, help="main listener (0: any free)")
    demo.add_argument("--keep", action="store_true", help="keep the demo's state directory")
    demo.add_argument(
        "--speed",
        type=float,
        default=10.0,
        help="hall time runs X times faster (default 10: a day in under an hour)",
    )
    demo.add_argument(
        "--start",
        type=_moment,
        metavar="YYYY-MM-DDTHH:MM",
        help="hall time to start at (default: 08:45 on the next working day)",
    )
    demo.add_argument(
        "--mqtt",
        type=_broker_address,
        metavar="HOST:PORT",
        help="use this broker (anonymous access) instead of starting a private one",
    )
    return parser


def check_config(path: str) -> int:
    config = load_config_or_report(path)
    if config is None:
        return EXIT_CONFIG
    _secrets, missing = resolve_secrets(config)
    for line in [*missing, *unsupported_devices([d.profile for d in config.devices])]:
        print(f"warning: {line}", file=sys.stderr)  # noqa: T201
    print("OK")  # noqa: T201
    return EXIT_OK


def load_for_run(path: str) -> tuple[Config, Secrets] | int:
    """The config and its secrets, or the exit status after printing why they cannot be used."""
    config = load_config_or_report(path)
    if config is None:
        return EXIT_CONFIG
    secrets, missing = resolve_secrets(config)
    problems = [*missing, *unsupported_devices([d.profile for d in config.devices])]
    if problems:
        _print_errors(problems)
        return EXIT_CONFIG
    return config, secrets


def run_gateway(
    path: str,
    *,
    clock_start: dt.datetime | None = None,
    clock_speed: float = 1.0,
    clock_anchor: float | None = None,
) -> int:
    loaded = load_for_run(path)
    if isinstance(loaded, int):
        return loaded
    config, secrets = loaded
    from gateway.app import Gateway  # noqa: PLC0415  # keeps check-config free of the runtime

    clock: Clock | None = None
    if clock_start is not None or clock_speed != 1.0 or clock_anchor is not None:
        if clock_speed <= 0:
            _print_errors([f"--clock-speed: must be greater than 0 (got {clock_speed})"])
            return EXIT_CONFIG
        if clock_start is not None:
            start = clock_start.replace(tzinfo=config.zone)
        else:
            start = dt.datetime.now(config.zone)
        clock = ScaledClock(start, clock_speed, clock_anchor)
    gateway = Gateway(config, secrets, clock=clock, config_path=path)
    return run_until_stopped(gateway.run(), on_hangup=gateway.request_reload)


def run_until_stopped(
    work: Coroutine[Any, Any, Any], *, on_hangup: Callable[[], None] | None = None
) -> int:
    """Run `work` until it ends or SIGTERM/SIGINT arrives; then stop it cleanly. SIGHUP calls
    `on_hangup` (the gateway reloads its config)."""

    async def supervise() -> int:
        task = asyncio.ensure_future(work)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        if on_hangup is not None:
            loop.add_signal_handler(signal.SIGHUP, on_hangup)
        try:
            await task
        except asyncio.CancelledError:
            log.info("stopped")
        except Exception as err:
            causes = _leaves(err)
            config_errors = [c for c in causes if isinstance(c, ConfigError)]
            if config_errors:
                _print_errors([line for c in config_errors for line in c.errors])
                return EXIT_CONFIG
            if not all(isinstance(cause, GatewayError | OSError) for cause in causes):
                raise
            # a port in use, a store that cannot be opened: say so, without a traceback
            for cause in causes:
                log.error("cannot run: %s", cause)
            return EXIT_FAILURE
        return EXIT_OK

    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(supervise())
    return EXIT_OK


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-11-20") from None


def _broker_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT, like 127.0.0.1:1883")
    return host, int(port)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _moment(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time like 2026-11-23T08:30") from None
    if moment.tzinfo is not None:
        raise argparse.ArgumentTypeError("give hall time without a UTC offset")
    return moment


def _month(text: str) -> dt.date:
    try:
        return dt.datetime.strptime(text, "%Y-%m").date()  # noqa: DTZ007  # a date, no time
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a month like 2026-11") from None


def _leaves(err: BaseException) -> list[BaseException]:
    if isinstance(err, BaseExceptionGroup):
        return [leaf for inner in err.exceptions for leaf in _leaves(inner)]
    return [err]


def _print_errors(errors: list[str]) -> None:
    for line in errors:
        print(line, file=sys.stderr)  # noqa: T201


if __name__ == "__main__":
    sys.exit(main())
