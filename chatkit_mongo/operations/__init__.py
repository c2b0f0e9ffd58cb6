"""Operations the CLI and the stores share: indexes, erase (purges), export/import,
sharding, doctor and explain. Built on the library at the package root."""
