// RocketMQ's Java producer as the limit for benchmarks/rocketmq_batch_throughput.py.
//
// The same measurement as the RocketMQ distribution's benchmark producer
// (org.apache.rocketmq.example.benchmark.Producer: DefaultMQProducer, threads each sending
// synchronously, 64 by default), reduced to a fixed message count and one figure. That tool
// ships only in the binary distribution (rocketmq-example is not published to Maven), so this
// file is run in the broker's container, against the client jars the broker ships, with
// Java's single-file source launcher:
//
//   java -cp "$ROCKETMQ_HOME/lib/*" ProducerBench.java NAMESRV TOPIC THREADS COUNT SIZE
//
// Prints "RATE <confirmed sends per second>" and "FAILED <count>".

import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.client.producer.SendStatus;
import org.apache.rocketmq.common.message.Message;

public class ProducerBench {
    public static void main(String[] args) throws Exception {
        String namesrv = args[0];
        String topic = args[1];
        int threads = Integer.parseInt(args[2]);
        int count = Integer.parseInt(args[3]);
        byte[] body = new byte[Integer.parseInt(args[4])];
        java.util.Arrays.fill(body, (byte) 'x');

        DefaultMQProducer producer = new DefaultMQProducer("unimq_bench_producer");
        producer.setInstanceName(Long.toString(System.nanoTime()));
        producer.setNamesrvAddr(namesrv);
        producer.setCompressMsgBodyOverHowmuch(Integer.MAX_VALUE);
        producer.start();
        // One send outside the clock: the topic route and the connection, as for the others.
        // A busy machine can time the name server out: try again rather than give up.
        for (int attempt = 1; ; attempt++) {
            try {
                producer.send(new Message(topic, body));
                break;
            } catch (Exception e) {
                if (attempt == 10) {
                    System.out.println("ERROR first send: " + e);
                    System.exit(1);
                }
                Thread.sleep(1000);
            }
        }

        AtomicLong failed = new AtomicLong();
        CountDownLatch done = new CountDownLatch(threads);
        long started = System.nanoTime();
        for (int t = 0; t < threads; t++) {
            final int share = count / threads + (t < count % threads ? 1 : 0);
            new Thread(() -> {
                try {
                    for (int i = 0; i < share; i++) {
                        try {
                            SendResult result = producer.send(new Message(topic, body));
                            if (result.getSendStatus() != SendStatus.SEND_OK) {
                                failed.incrementAndGet();
                            }
                        } catch (Exception e) {
                            failed.incrementAndGet();
                        }
                    }
                } finally {
                    done.countDown();
                }
            }).start();
        }
        done.await();
        double seconds = (System.nanoTime() - started) / 1e9;
        System.out.println("RATE " + (count / seconds));
        System.out.println("FAILED " + failed.get());
        producer.shutdown();
        System.exit(0); // the client's threads must not keep a finished run alive
    }
}
