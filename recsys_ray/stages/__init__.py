"""Pure stages of the training-data build: functions over Arrow tables, no Ray."""
