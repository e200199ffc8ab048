"""Profile the GES solve unit by unit (issue 15), and re-solve the recorded units offline.

    # prune through the real CLI, recording every unit's normalised problems and solve time:
    python tools/profile_solve.py dump DIR -- MODEL OUT --calib CALIB --verbose
    # re-solve the recorded units with the current code (or other GesOptions, e.g. max_iter=10):
    python tools/profile_solve.py resolve DIR [option=value ...]

`dump` prints one line per unit (channels n, readers, features d and targets m of each reader,
iterations, seconds); `resolve` prints the time of each unit now and how many channels' keep
decision (n*w >= 0.5) differs from the recorded run. Units are pickled: DIR grows by d*d*4 bytes
per reader (85 MB for a 4,608-feature layer).
"""

from __future__ import annotations

import dataclasses
import glob
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def dump(directory: Path, cli_args: list[str]) -> None:
    import onnxprune.pruning.select as select
    from onnxprune.cli import main

    directory.mkdir(parents=True, exist_ok=True)
    solve = select.solve_ges
    count = 0

    def recorded(problems, options):
        nonlocal count
        start = time.perf_counter()
        result = solve(problems, options)
        seconds = time.perf_counter() - start
        with open(directory / f"u{count:03d}.pkl", "wb") as f:
            pickle.dump({"problems": problems, "options": options, "weights": result.weights,
                         "n_iter": result.n_iter, "time": seconds}, f)
        print(f"unit {count}: n={problems[0].n_channels} readers={len(problems)} "
              f"d={[p.gram.shape[0] for p in problems]} m={[p.cross.shape[0] for p in problems]} "
              f"iterations={result.n_iter} {seconds:.2f}s", file=sys.stderr)
        count += 1
        return result

    select.solve_ges = recorded  # the selector registry looks the solver up at call time
    main(args=cli_args, prog_name="onnxprune")


def resolve(directory: Path, overrides: dict[str, str]) -> None:
    from onnxprune.solve.ges import solve_ges

    total, differ, kept = 0.0, 0, 0
    for path in sorted(glob.glob(str(directory / "u*.pkl"))):
        with open(path, "rb") as f:
            unit = pickle.load(f)
        options = unit["options"]
        options = dataclasses.replace(options, **{k: type(getattr(options, k))(v) for k, v in overrides.items()})
        start = time.perf_counter()
        result = solve_ges(unit["problems"], options)
        seconds = time.perf_counter() - start
        n = result.weights.size
        before, after = unit["weights"] * n >= 0.5, result.weights * n >= 0.5
        total, differ, kept = total + seconds, differ + int((before != after).sum()), kept + int(before.sum())
        print(f"{Path(path).stem}: n={n} iterations={result.n_iter} {seconds:.2f}s (recorded {unit['time']:.2f}s), "
              f"kept {before.sum()} -> {after.sum()}, {int((before != after).sum())} decisions differ")
    print(f"total {total:.1f}s; {differ} channel decisions differ ({kept} kept in the recorded run)")


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("dump", "resolve"):
        sys.exit(__doc__)
    if sys.argv[1] == "dump":
        rest = sys.argv[3:]
        dump(Path(sys.argv[2]), rest[1:] if rest[:1] == ["--"] else rest)
    else:
        resolve(Path(sys.argv[2]), dict(arg.split("=", 1) for arg in sys.argv[3:]))
