"""Create the indexes chatkit-mongo needs; see ``chatkit_mongo.create_indexes``.

Also installed as the console command ``chatkit-mongo-create-indexes``.
"""

import sys

from chatkit_mongo.create_indexes import main

if __name__ == "__main__":
    sys.exit(main())
