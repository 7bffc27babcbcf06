"""Remote execution through fray: remote-tagged actions run as fray jobs.

Driver side:  executor (FrayExecutor, the Runner: queue, submit, poll, retry, report)
              → backend (what it needs of a client) → local (LocalClient) | iris (iris, iris-local)
              → failures (what an unsuccessful job means), job_logs (the logs it keeps and shows)
Both sides:   submission (an action as a job: name, resources, request), wire (the JobReport a
              job leaves for its driver, and the marker lines of a job's log), clients (making
              and stopping fray clients; also used by the remote() step)
Job side:     job (run the action, leave the report), thread_output (in-process jobs' output)

Importing any of these does not import fray or iris; a backend imports them when it is made.
"""
