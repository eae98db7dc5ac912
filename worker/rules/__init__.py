"""Pure rules: no I/O, no SQLAlchemy, no clock reads. Time and settings are arguments.

`cadence` (what a day is, which chats are due), `classify` (what a Linq answer means),
`retrying` (the retry policy), `states` (where a chat-day stands), `facts` (what is known of a
chat). Everything else in `worker` may import these; these import nothing else of `worker`.
"""
