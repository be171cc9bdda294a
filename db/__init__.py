"""SQLModel models, engine, migrations and seed data: PostgreSQL is the truth for stock."""
