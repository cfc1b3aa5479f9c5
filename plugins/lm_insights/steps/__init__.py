"""The pipeline's steps in the order a run takes them: extract, validate, textualize, infer, insights, load (the
partition itself is ``lm_insights.core.partition``).

Plain modules: none imports Airflow. ``lm_insights.airflow_dag`` wires them as tasks, ``lm_insights.pipeline`` calls
them in one process.
"""
