"""Create the indexes chatkit-mongo needs: the same command as ``chatkit-mongo init``.

Also installed as the console command ``chatkit-mongo-create-indexes``; every option of
``chatkit-mongo init`` works here (``--help`` lists them).
"""

from chatkit_mongo.apps.cli import create_indexes_main

if __name__ == "__main__":
    create_indexes_main()
