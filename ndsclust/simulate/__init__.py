"""What-if simulation on the real decision core (``ndsclust simulate``).

``engine`` runs every server's ``decide`` over simulated time against a simulated
directory (replication lag and lost answers included, for the tests' hard cases);
``snapshot`` reads the directory (live or saved) into a simulation; ``scenario`` applies
hypothetical events in order and reports the placement and the events each server would
write. Nothing here writes to a directory.
"""
