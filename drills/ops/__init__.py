"""How the hospital runs drills: drill definitions and schedules, statutory holidays,
notifications, and the freshness of the evidence per playbook and environment."""
