#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft, broker + controller in one
# process) on 127.0.0.1, run from the jars on Maven Central. Beside
# PLAINTEXT on KAFKA_PORT (9092) it serves SASL_SSL with SCRAM-SHA-512,
# SCRAM-SHA-256 and PLAIN on KAFKA_PORT+2 (9094; user acme-integration, its
# password in .cache/kafka/scram-password) and SSL with required client
# certificates on KAFKA_PORT+3 (9095), from a local CA made once with openssl
# in .cache/kafka/tls/ (ca.crt, client.crt, client.key: PEM).
#
#   scripts/kafka.sh up       fetch (once), format (once), start, wait until it answers
#   scripts/kafka.sh down     stop it cleanly
#   scripts/kafka.sh status   say whether the broker this script started answers
#   scripts/kafka.sh port     print that broker's PLAINTEXT port
#   scripts/kafka.sh fetch    only fetch the jars
#   scripts/kafka.sh tool CLASS ARGS...   run one of Kafka's own tools (e.g.
#                             org.apache.kafka.tools.TopicCommand --list ...)
#   scripts/kafka.sh reset    stop it and delete its data
#   scripts/kafka.sh cluster-up | cluster-down | cluster-reset
#                             a 3-node KRaft cluster (each node broker and
#                             controller) on 127.0.0.1, PLAINTEXT ports
#                             KAFKA_CLUSTER_PORT (39100), +10, +20; default
#                             replication factor 3, min.insync.replicas 2
#
# This script only ever uses, configures or stops a broker it started
# itself (its pid file). When something else listens on 9092 (a broker of
# another clone or project), it is left alone: without KAFKA_PORT the
# broker starts on a free block of four ports instead, and says so; the
# port is kept in .cache/kafka/port for the next commands (`port` prints
# it). With KAFKA_PORT set, a port taken by another program is an error.
#
# Environment: KAFKA_PORT (default 9092, or the port of the broker this
# script runs; the controller uses KAFKA_PORT+1, SASL_SSL KAFKA_PORT+2, SSL
# KAFKA_PORT+3), KAFKA_HEAP (default 768m), KAFKA_HOME (default .cache/kafka
# in the repo).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pom="$repo/scripts/kafka/pom.xml"
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
heap=${KAFKA_HEAP:-768m}
home=${KAFKA_HOME:-$repo/.cache/kafka}
libs="$home/$version/libs"
tls="$home/tls"
scram_user=acme-integration
scram_file="$home/scram-password"
portfile="$home/port" # the port of the broker this script started last

# set_port PORT: the broker's ports and files.
set_port() {
  port=$1
  controller_port=$((port + 1))
  sasl_port=$((port + 2))
  ssl_port=$((port + 3))
  run="$home/run-$port"
  pidfile="$run/broker.pid"
  logfile="$run/broker.log"
}
# ours PORT: a broker this script started runs for PORT.
ours() { [ -f "$home/run-$1/broker.pid" ] && kill -0 "$(cat "$home/run-$1/broker.pid")" 2>/dev/null; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# free_block: a port p with p..p+3 free, among 20000-29999 (below the
# kernel's ephemeral range).
free_block() {
  local p o tries
  for tries in $(seq 1 200); do
    p=$((20000 + (RANDOM % 2500) * 4))
    for o in 0 1 2 3; do listening $((p + o)) && continue 2; done
    echo "$p"
    return 0
  done
  return 1
}
explicit_port=${KAFKA_PORT:-}
if [ -n "$explicit_port" ]; then
  set_port "$explicit_port"
elif [ -f "$portfile" ] && ours "$(cat "$portfile")"; then
  set_port "$(cat "$portfile")"
else
  set_port 9092
fi

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

# tls_material makes, once, a local CA, the broker's certificate (for
# 127.0.0.1 and localhost) in a PKCS12 keystore, and a client certificate
# for mTLS, all PEM but the keystore; and the SCRAM user's password.
tls_material() {
  [ -f "$tls/.complete" ] && [ -f "$scram_file" ] && return 0
  command -v openssl >/dev/null || die "openssl is needed for the local TLS listeners (Debian: openssl)"
  rm -rf "$tls" && mkdir -p "$tls"
  say "making a local CA and certificates in $tls (once)"
  (
    cd "$tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=acme-integration local CA" -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout broker.key -out broker.csr 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >broker.ext
    openssl x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile broker.ext -out broker.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=acme-integration" -keyout client.key -out client.csr 2>/dev/null
    openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -out client.crt 2>/dev/null
    openssl rand -hex 16 >keystore-password
    openssl pkcs12 -export -in broker.crt -inkey broker.key -certfile ca.crt -name broker \
      -passout "file:keystore-password" -out broker.p12
    rm -f ./*.csr broker.ext
    chmod 600 ./*.key keystore-password broker.p12
  ) || die "making the TLS material failed"
  [ -f "$scram_file" ] || { openssl rand -hex 16 >"$scram_file"; chmod 600 "$scram_file"; }
  touch "$tls/.complete"
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
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port,SASL_SSL://127.0.0.1:$sasl_port,SSL://127.0.0.1:$ssl_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_SSL://127.0.0.1:$sasl_port,SSL://127.0.0.1:$ssl_port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$scram_user="$(cat "$scram_file")";
ssl.keystore.type=PKCS12
ssl.keystore.location=$tls/broker.p12
ssl.keystore.password=$(cat "$tls/keystore-password")
ssl.key.password=$(cat "$tls/keystore-password")
ssl.truststore.type=PEM
ssl.truststore.location=$tls/ca.crt
listener.name.ssl.ssl.client.auth=required
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

# scram_user_made creates the SCRAM user (both hashes) once per data
# directory, through the plaintext listener, on the broker this script
# started (never on another).
scram_user_made() {
  running_pid >/dev/null || die "no broker started by this script on $port: its users are not this script's to change"
  [ -f "$run/data/.scram-$scram_user" ] && return 0
  local pw mechanism; pw=$(cat "$scram_file")
  for mechanism in SCRAM-SHA-512 SCRAM-SHA-256; do # one per request, as Kafka requires
    java_cmd kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$port" --alter --entity-type users --entity-name "$scram_user" \
      --add-config "$mechanism=[password=$pw]" >/dev/null 2>>"$logfile" \
      || die "creating the SCRAM user $scram_user ($mechanism) failed; see $logfile"
  done
  touch "$run/data/.scram-$scram_user"
}

up() {
  fetch
  tls_material
  if running_pid >/dev/null && answers; then
    if ! listening "$sasl_port"; then
      say "broker $(running_pid) has no secured listeners (an older configuration): restarting it"
      down
    else
      say "broker already answering on 127.0.0.1:$port (started by this script; reused)"
      mkdir -p "$run" && write_log_config
      scram_user_made
      echo "$port" >"$portfile"
      return 0
    fi
  fi
  if ! running_pid >/dev/null; then
    local o
    for o in 0 1 2 3; do
      listening $((port + o)) || continue
      if [ -n "$explicit_port" ]; then
        die "127.0.0.1:$((port + o)) is taken by a program this script did not start (a broker of another clone or project?): it is left alone. Choose another KAFKA_PORT, or unset it to start on a free port."
      fi
      local was=$port np
      np=$(free_block) || die "no free block of four ports found in 20000-29999"
      set_port "$np"
      say "127.0.0.1:$((was + o)) is taken by a program this script did not start: it is left alone; this broker starts on 127.0.0.1:$port instead"
      break
    done
  fi
  mkdir -p "$run" && write_log_config
  if pid=$(running_pid); then
    say "broker process $pid exists but does not answer yet; waiting for it"
  else
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
  scram_user_made
  echo "$port" >"$portfile"
  say "broker answering on 127.0.0.1:$port (PLAINTEXT), 127.0.0.1:$sasl_port (SASL_SSL), 127.0.0.1:$ssl_port (SSL, client certificates)"
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

# The 3-node cluster: node i listens on cluster_port + 10*(i-1), its
# controller on the port after it.
cluster_port=${KAFKA_CLUSTER_PORT:-39100}
cluster_run="$home/run-cluster-$cluster_port"
node_port() { echo $((cluster_port + 10 * ($1 - 1))); }

cluster_node_config() { # node
  local i=$1 p voters=""
  p=$(node_port "$i")
  for j in 1 2 3; do voters+="${voters:+,}$j@127.0.0.1:$(($(node_port "$j") + 1))"; done
  mkdir -p "$cluster_run/node-$i"
  cat >"$cluster_run/node-$i/server.properties" <<CONF
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$p,CONTROLLER://127.0.0.1:$((p + 1))
advertised.listeners=PLAINTEXT://127.0.0.1:$p
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$cluster_run/node-$i/data
num.partitions=1
default.replication.factor=3
min.insync.replicas=2
auto.create.topics.enable=false
offsets.topic.replication.factor=3
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
group.initial.rebalance.delay.ms=0
CONF
}

node_answers() { java_cmd org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$(node_port "$1")" --list >/dev/null 2>&1; }

cluster_node_up() { # node: start it if it is not running
  local i=$1; local pidf="$cluster_run/node-$i/broker.pid"
  if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then return 0; fi
  nohup java -Xms384m -Xmx384m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -cp "$libs/*" -Dlog4j2.configurationFile="$run/log4j2.properties" \
    kafka.Kafka "$cluster_run/node-$i/server.properties" >>"$cluster_run/node-$i/broker.log" 2>&1 </dev/null &
  echo $! >"$pidf"
}

cluster_up() {
  fetch
  mkdir -p "$run" "$cluster_run" && write_log_config
  local id i
  [ -f "$cluster_run/cluster.id" ] || java_cmd kafka.tools.StorageTool random-uuid >"$cluster_run/cluster.id" 2>/dev/null
  id=$(cat "$cluster_run/cluster.id")
  for i in 1 2 3; do
    cluster_node_config "$i"
    if [ ! -f "$cluster_run/node-$i/data/meta.properties" ]; then
      java_cmd kafka.tools.StorageTool format -t "$id" -c "$cluster_run/node-$i/server.properties" >/dev/null 2>>"$cluster_run/node-$i/broker.log" \
        || die "formatting node $i failed; see $cluster_run/node-$i/broker.log"
    fi
    cluster_node_up "$i"
  done
  local deadline=$((SECONDS + 120))
  for i in 1 2 3; do
    until node_answers "$i"; do
      [ $SECONDS -lt $deadline ] || die "node $i did not answer within 120s; see $cluster_run/node-$i/broker.log"
      sleep 0.5
    done
  done
  say "3-node cluster answering on 127.0.0.1:$(node_port 1),$(node_port 2),$(node_port 3)"
}

cluster_down() {
  local i pidf pid
  for i in 1 2 3; do
    pidf="$cluster_run/node-$i/broker.pid"
    [ -f "$pidf" ] || continue
    pid=$(cat "$pidf")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidf"
  done
  say "cluster stopped"
}

case "${1:-}" in
  cluster-up) cluster_up; exit 0 ;;
  cluster-down) cluster_down; exit 0 ;;
  cluster-reset) cluster_down; rm -rf "$cluster_run"; say "cluster data deleted"; exit 0 ;;
  cluster-node-up) fetch; mkdir -p "$run" && write_log_config; cluster_node_up "$2"; deadline=$((SECONDS + 120))
    until node_answers "$2"; do [ $SECONDS -lt $deadline ] || die "node $2 did not answer"; sleep 0.5; done; exit 0 ;;
esac

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) if running_pid >/dev/null && answers; then say "answering on 127.0.0.1:$port"; else say "no broker started by this script answers on 127.0.0.1:$port"; exit 1; fi ;;
  port) if running_pid >/dev/null; then echo "$port"; else say "no broker started by this script is running"; exit 1; fi ;;
  fetch) fetch ;;
  tool) shift; tool "$@" ;;
  reset) down; rm -rf "$run"; say "data deleted" ;;
  *) sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
