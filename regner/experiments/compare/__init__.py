"""The comparison engine behind ``regner compare`` (issue #31, in progress): the sequential paired
decision per method (:mod:`.sequential`) and its replay over runs that already exist (:mod:`.replay`)."""
