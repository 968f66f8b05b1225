# Sourced by the unimq RocketMQ image's scripts: JVM flags for JDK 17.
ROCKETMQ_HOME=/opt/rocketmq
export ROCKETMQ_HOME
RMQ_CP="$ROCKETMQ_HOME/conf:$ROCKETMQ_HOME/lib/*"
RMQ_JDK17_OPENS="--add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.lang.reflect=ALL-UNNAMED --add-opens=java.base/java.util=ALL-UNNAMED --add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/sun.nio.ch=ALL-UNNAMED --add-opens=java.base/jdk.internal.misc=ALL-UNNAMED --add-exports=java.base/jdk.internal.ref=ALL-UNNAMED --add-exports=java.base/sun.nio.ch=ALL-UNNAMED -Dio.netty.tryReflectionSetAccessible=true"
RMQ_JAVA_COMMON="-server -XX:+UseG1GC -XX:-OmitStackTraceInFastThrow -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true $RMQ_JDK17_OPENS -Drocketmq.home.dir=$ROCKETMQ_HOME -Duser.home=/var/lib/rocketmq"
