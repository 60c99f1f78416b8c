#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft, broker + controller in one
# process) on 127.0.0.1, run from the jars on Maven Central.
#
#   scripts/kafka.sh up       fetch (once), format (once), start, wait until it answers
#   scripts/kafka.sh down     stop it cleanly
#   scripts/kafka.sh status   say whether it answers
#   scripts/kafka.sh fetch    only fetch the jars
#   scripts/kafka.sh tool CLASS ARGS...   run one of Kafka's own tools (e.g.
#                             org.apache.kafka.tools.TopicCommand --list ...)
#   scripts/kafka.sh reset    stop it and delete its data
#
# Environment: KAFKA_PORT (default 9092; the controller uses KAFKA_PORT+1),
# KAFKA_HEAP (default 768m), KAFKA_HOME (default .cache/kafka in the repo).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pom="$repo/scripts/kafka/pom.xml"
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
port=${KAFKA_PORT:-9092}
controller_port=$((port + 1))
heap=${KAFKA_HEAP:-768m}
home=${KAFKA_HOME:-$repo/.cache/kafka}
libs="$home/$version/libs"
run="$home/run-$port"
pidfile="$run/broker.pid"
logfile="$run/broker.log"

say() { printf 'kafka: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

need_tools() {
  local missing=()
  command -v java >/dev/null 2>&1 || missing+=("java (JDK/JRE 17 or newer; Debian: openjdk-17-jre-headless)")
  command -v mvn >/dev/null 2>&1 || missing+=("mvn (Apache Maven; Debian: maven)")
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing what is missing: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null \
      || die "could not install Java and Maven with apt-get; install them and try again"
    return 0
  fi
  die "missing: ${missing[*]}. Install them and try again."
}

fetch() {
  [ -f "$libs/.complete" ] && return 0
  need_tools
  say "fetching Apache Kafka $version from Maven Central (once)"
  rm -rf "$libs" && mkdir -p "$libs"
  mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$libs" \
    || die "mvn could not fetch org.apache.kafka:kafka_2.13:$version (is Maven Central reachable?)"
  touch "$libs/.complete"
}

java_cmd() { java -Xshare:auto -cp "$libs/*" -Dlog4j2.configurationFile="$run/log4j2.properties" "$@"; }

tool() { # run one of Kafka's tools with the fetched jars and log config
  fetch
  mkdir -p "$run" && write_log_config
  java_cmd "$@"
}

answers() { # true when a Kafka protocol request succeeds, not just an open port
  [ -f "$libs/.complete" ] || return 1
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || return 1
  java_cmd org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$port" --list >/dev/null 2>&1
}

running_pid() {
  [ -f "$pidfile" ] || return 1
  local pid; pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

write_log_config() {
  cat >"$run/log4j2.properties" <<CONF
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.target = SYSTEM_ERR
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = \${env:KAFKA_LOG_LEVEL:-INFO}
rootLogger.appenderRef.out.ref = OUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
CONF
}

write_server_config() {
  cat >"$run/server.properties" <<CONF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$run/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
CONF
}

up() {
  fetch
  mkdir -p "$run" && write_log_config
  if answers; then
    say "broker already answering on 127.0.0.1:$port (reused)"
    return 0
  fi
  if pid=$(running_pid); then
    say "broker process $pid exists but does not answer yet; waiting for it"
  else
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      die "port $port is taken by something that is not a Kafka broker; set KAFKA_PORT"
    fi
    write_server_config
    if [ ! -f "$run/data/meta.properties" ]; then
      local id; id=$(java_cmd kafka.tools.StorageTool random-uuid 2>/dev/null)
      java_cmd kafka.tools.StorageTool format --standalone -t "$id" -c "$run/server.properties" >/dev/null 2>>"$logfile" \
        || die "formatting storage failed; see $logfile"
    fi
    say "starting Apache Kafka $version on 127.0.0.1:$port (log: $logfile)"
    nohup java -Xms"$heap" -Xmx"$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
      -cp "$libs/*" -Dlog4j2.configurationFile="$run/log4j2.properties" \
      kafka.Kafka "$run/server.properties" >>"$logfile" 2>&1 </dev/null &
    echo $! >"$pidfile"
  fi
  local deadline=$((SECONDS + 90))
  until answers; do
    running_pid >/dev/null || { tail -n 30 "$logfile" >&2; die "broker exited during start; see $logfile"; }
    [ $SECONDS -lt $deadline ] || die "broker did not answer within 90s; see $logfile"
    sleep 0.5
  done
  say "broker answering on 127.0.0.1:$port"
}

down() {
  local pid
  if ! pid=$(running_pid); then
    say "no broker started by this script is running"
    rm -f "$pidfile"
    return 0
  fi
  say "stopping broker $pid"
  kill -TERM "$pid"
  for _ in $(seq 1 120); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; say "stopped"; return 0; }
    sleep 0.25
  done
  say "broker did not stop within 30s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) if answers; then say "answering on 127.0.0.1:$port"; else say "not answering on 127.0.0.1:$port"; exit 1; fi ;;
  fetch) fetch ;;
  tool) shift; tool "$@" ;;
  reset) down; rm -rf "$run"; say "data deleted" ;;
  *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
