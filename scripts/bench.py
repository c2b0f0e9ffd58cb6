"""Run the chatkit-mongo benchmark; see ``chatkit_mongo.apps.bench`` and ``--help``.

Also available as ``chatkit-mongo bench``.
"""

from chatkit_mongo.apps.bench import bench_command

if __name__ == "__main__":
    bench_command()
