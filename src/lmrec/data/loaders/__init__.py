"""One module per source format; each returns lmrec.data objects and names file and line on bad input."""
