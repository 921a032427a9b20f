"""A simulated stimulus process: animal metadata, a protocol, its log, then stop.

It is the rig's protocol runner: it owns the animal and session metadata and
the protocol parameters, logs each stimulus as it is shown, and at protocol end
stops the experiment, which makes the daemon save everything.
"""

from __future__ import annotations

import datetime as dt
import sys
import time

from collectord import Client

if __package__:
    from ._args import CLOCK_INTERVAL, parse, simulated_clock
else:  # run as a script from a checkout: python clients/stimulus.py
    from _args import CLOCK_INTERVAL, parse, simulated_clock  # type: ignore[no-redef]

ANIMAL = {"species": "Danio rerio", "genotype": "TL", "age": 7, "comments": ""}
PROTOCOL = {"n_repeats": 3, "flash_duration": 0.2, "pause": 0.4, "luminance": 0.8}


def main(argv: list[str] | None = None) -> int:
    args = parse("Simulated stimulus process (stops the experiment at protocol end).", argv)
    clock = simulated_clock(args)
    with Client(
        "stimulus", args.data, args.control, clock=clock, clock_interval=CLOCK_INTERVAL
    ) as client:
        animal = {**ANIMAL, **client.restore("general/animal")}
        protocol = {**PROTOCOL, **client.restore("stimulus/protocol/flashes")}
        client.set_params("general/animal", animal)
        client.set_params("general/basic", experimenter_name="demo", setup_name="rig-sim")
        client.set_params("stimulus/protocol/flashes", protocol)
        client.set_params("stimulus/display_params", pos=[460, 301], size=[439, 417])

        t_start = dt.datetime.now()
        client.add_data("general/t_protocol_start", t_start)
        client.add_data("general/fish_id", f"{t_start:%y%m%d}_f1")
        client.add_data("general/session_id", f"{t_start:%H%M%S}")
        log = []
        origin = time.monotonic()
        # Fill the protocol's duration with flashes, as many repeats as fit.
        cycle = protocol["flash_duration"] + protocol["pause"]
        n_flashes = max(1, int(args.duration / cycle))
        for index in range(n_flashes):
            t_on = time.monotonic() - origin
            time.sleep(protocol["flash_duration"])
            t_off = time.monotonic() - origin
            log.append(
                {
                    "name": "flash",
                    "index": index,
                    "t_start": t_on,
                    "t_stop": t_off,
                    "luminance": protocol["luminance"],
                    "real_time_start": dt.datetime.now(),
                }
            )
            time.sleep(protocol["pause"])
        client.add_data("stimulus/log", log)
        client.add_data("general/t_protocol_end", dt.datetime.now())
        path = client.stop(reason="protocol finished")
    print(f"stimulus: {len(log)} flashes; saved {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
