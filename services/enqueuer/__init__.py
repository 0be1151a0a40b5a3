"""The enqueuer: cuts a job's input into batches and writes them to the job's queue."""
