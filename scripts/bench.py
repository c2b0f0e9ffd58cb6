"""Run the chatkit-mongo benchmark; see ``chatkit_mongo.bench`` and ``--help``.

Also available as ``chatkit-mongo bench``.
"""

from chatkit_mongo.bench import bench_command

if __name__ == "__main__":
    bench_command()
