-- One database per service; Prefect needs pg_trgm.
CREATE DATABASE prefect;
CREATE DATABASE mlflow;
CREATE DATABASE gateway;
\c prefect
CREATE EXTENSION IF NOT EXISTS pg_trgm;
