#!/usr/bin/env bash
# Resolves the JVM test classpath (Apache Kafka 4.4.0, kafka-clients, kafka-tools from Maven Central)
# and compiles the Java programs under src/main/java. Idempotent; quick when nothing changed.
# Output: tests/java/target/classes + tests/java/target/classpath.txt; tests/java/classpath.sh
# prints the full classpath for `java -cp`.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
for tool in java mvn; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "java setup: $tool not found (the test machines have OpenJDK 17 + Maven)" >&2
        exit 1
    fi
done
if [ ! -s "$HERE/target/classpath.txt" ] || [ "$HERE/pom.xml" -nt "$HERE/target/classpath.txt" ] ||
    [ -n "$(find "$HERE/src" -newer "$HERE/target/classpath.txt" -name '*.java' 2>/dev/null | head -1)" ]; then
    echo "java setup: mvn package + dependency:build-classpath"
    mvn -q -B -f "$HERE/pom.xml" package dependency:build-classpath \
        -Dmdep.outputFile="$HERE/target/classpath.txt"
fi
