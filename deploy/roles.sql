-- One PostgreSQL role per database, run by deploy/postgres.sh as the superuser at each
-- start (idempotent). The superuser bootstraps and is used by nothing else:
--   optuna role     owns the Optuna database: the sweeps read and write the study
--   mlflow role     owns the MLflow database: the tracking server
--   dashboard role  reads the Optuna database: optuna-dashboard, nothing else
-- Names and passwords come from the environment through psql's \getenv (never on a
-- command line, never spliced into SQL text): :"name" quotes an identifier, :'name' a
-- literal. deploy/postgres.sh has already checked the names (require_identifier).
\set ON_ERROR_STOP on
\getenv optuna_db OPTUNA_DB
\getenv mlflow_db MLFLOW_DB
\getenv optuna_user OPTUNA_DB_USER
\getenv optuna_password OPTUNA_DB_PASSWORD
\getenv mlflow_user MLFLOW_DB_USER
\getenv mlflow_password MLFLOW_DB_PASSWORD
\getenv dashboard_user DASHBOARD_DB_USER
\getenv dashboard_password DASHBOARD_DB_PASSWORD

SELECT format('CREATE ROLE %I', r) FROM unnest(ARRAY[:'optuna_user', :'mlflow_user',
    :'dashboard_user']) AS r WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \gexec
ALTER ROLE :"optuna_user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    PASSWORD :'optuna_password';
ALTER ROLE :"mlflow_user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    PASSWORD :'mlflow_password';
ALTER ROLE :"dashboard_user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    PASSWORD :'dashboard_password';

SELECT format('CREATE DATABASE %I OWNER %I', :'optuna_db', :'optuna_user')
    WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'optuna_db') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'mlflow_db', :'mlflow_user')
    WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'mlflow_db') \gexec
ALTER DATABASE :"optuna_db" OWNER TO :"optuna_user";
ALTER DATABASE :"mlflow_db" OWNER TO :"mlflow_user";
-- Nobody else connects: not the other services' roles, not a role added later.
REVOKE ALL ON DATABASE :"optuna_db" FROM PUBLIC;
REVOKE ALL ON DATABASE :"mlflow_db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"optuna_db" TO :"dashboard_user";

-- In each database its role owns the schema and every table and sequence in it (a
-- database an earlier deploy made as the superuser is handed over).
\connect :"mlflow_db"
ALTER SCHEMA public OWNER TO :"mlflow_user";
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SELECT format('ALTER TABLE public.%I OWNER TO %I', tablename, :'mlflow_user') FROM pg_tables
    WHERE schemaname = 'public' AND tableowner <> :'mlflow_user' \gexec
SELECT format('ALTER SEQUENCE public.%I OWNER TO %I', sequencename, :'mlflow_user')
    FROM pg_sequences WHERE schemaname = 'public' AND sequenceowner <> :'mlflow_user' \gexec

\connect :"optuna_db"
ALTER SCHEMA public OWNER TO :"optuna_user";
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SELECT format('ALTER TABLE public.%I OWNER TO %I', tablename, :'optuna_user') FROM pg_tables
    WHERE schemaname = 'public' AND tableowner <> :'optuna_user' \gexec
SELECT format('ALTER SEQUENCE public.%I OWNER TO %I', sequencename, :'optuna_user')
    FROM pg_sequences WHERE schemaname = 'public' AND sequenceowner <> :'optuna_user' \gexec
GRANT USAGE ON SCHEMA public TO :"dashboard_user";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"dashboard_user";
-- Tables Optuna creates later (as the optuna role) are readable by the dashboard too.
ALTER DEFAULT PRIVILEGES FOR ROLE :"optuna_user" IN SCHEMA public
    GRANT SELECT ON TABLES TO :"dashboard_user";
