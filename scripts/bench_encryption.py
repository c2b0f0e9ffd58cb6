"""Print what client-side encryption costs: ``chatkit-mongo bench --encryption``."""

import sys

from chatkit_mongo.apps.bench import bench_command

if __name__ == "__main__":
    bench_command(["--encryption", *sys.argv[1:]])
