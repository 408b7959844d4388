import com.thoughtworks.xstream.XStream;
import java.lang.reflect.Field;

/**
 * Debian's JMeter 2.13 under Debian's XStream 1.4.20: every .jmx is refused
 * (ForbiddenClassException), since XStream now permits no type unless told to, and JMeter 2.13
 * (written for XStream 1.4.x before that) never tells it. This launcher does what JMeter 2.13 does
 * itself, plus that: NewDriver's class loader (JMeter's jars), JMeter's properties, then its
 * SaveService's own XStream instances permitted JMeter's and jorphan's types, then
 * NewDriver.main with the arguments unchanged (JMeter's start() keeps that SaveService).
 *
 *   java -Djmeter.home=/usr/share/jmeter -cp CLASSES:/usr/share/jmeter/bin/ApacheJMeter.jar \
 *       SeedJMeter -n -t plan.jmx -l results.jtl ...
 */
public final class SeedJMeter {
    private static final String[] PERMITTED = {"org.apache.jmeter.**", "org.apache.jorphan.**"};

    public static void main(String[] args) throws Exception {
        String home = System.getProperty("jmeter.home");
        if (home == null) {
            throw new IllegalStateException("-Djmeter.home=... is required");
        }
        Class<?> driver = Class.forName("org.apache.jmeter.NewDriver");
        Field loaderField = driver.getDeclaredField("loader");
        loaderField.setAccessible(true);
        ClassLoader loader = (ClassLoader) loaderField.get(null);
        Class<?> utils = Class.forName("org.apache.jmeter.util.JMeterUtils", true, loader);
        utils.getMethod("setJMeterHome", String.class).invoke(null, home);
        utils.getMethod("loadJMeterProperties", String.class)
                .invoke(null, home + "/bin/jmeter.properties");
        Class<?> saveService = Class.forName("org.apache.jmeter.save.SaveService", true, loader);
        int permitted = 0;
        for (Field field : saveService.getDeclaredFields()) {
            if (XStream.class.isAssignableFrom(field.getType())) {
                field.setAccessible(true);
                ((XStream) field.get(null)).allowTypesByWildcard(PERMITTED);
                permitted++;
            }
        }
        if (permitted == 0) {
            throw new IllegalStateException("no XStream instance found in JMeter's SaveService");
        }
        driver.getMethod("main", String[].class).invoke(null, (Object) args);
    }
}
