"""Print what client-side encryption costs; see ``chatkit_mongo.apps.bench_encryption``."""

from chatkit_mongo.apps.bench_encryption import main

if __name__ == "__main__":
    main()
