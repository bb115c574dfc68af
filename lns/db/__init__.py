"""The node's database: engines and migrations (:mod:`database`), the tables every part
shares (:mod:`models`), and the one thread pool SQL runs on (:mod:`executor`)."""
